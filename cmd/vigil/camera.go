package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	vigilpkg "github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/camera"
	"github.com/vigilhq/vigil/internal/mqttconn"
)

type cameraFlags struct {
	source, site, id, brokers, username, zone, logLevel string
	width, height, fps, quality, priority               int
	preRoll                                             time.Duration
}

var cameraCommand = &command{
	name:    "camera",
	summary: "turn a video file, a V4L2 device or an RTSP camera into a Vigil camera",
	usage:   "camera --source FILE|/dev/videoN|rtsp://... --site SITE --id ID [flags]",
	help: `
Plays the part of the paper's Raspberry Pi camera with real video: ffmpeg
reads the source (a file, looped; a V4L2 device; an RTSP URL) as JPEG frames
of the given size and rate into a pre-roll buffer; the command connects to
the broker as device ID of SITE, announces the camera capability (retained
meta), and when the coordinator asks for a stream, sends the pre-roll and
then live frames as RTP/JPEG to the assigned agent, ending with RTCP BYE.

It has no presence sensor of its own: give it the --zone of the IR sensors
that watch the same place (their meta, or detection.zones in vigil.yaml).
Needs ffmpeg. The MQTT password comes from $VIGIL_MQTT_PASSWORD.`,
	examples: `  vigil camera --source /dev/video0 --site home --id hall-cam --zone hall
  vigil camera --source rtsp://10.0.0.20/stream1 --site shop --id till-cam --width 1280 --height 720
  vigil camera --source clip.mp4 --site lab --id test-cam --fps 10
  vigil camera --source lavfi:testsrc --site lab --id pattern   # an ffmpeg test pattern`,
	flags: func(fs *flag.FlagSet) any {
		f := &cameraFlags{}
		fs.StringVar(&f.source, "source", "", "video source: a file, /dev/videoN, rtsp://..., or lavfi:<filter> (required)")
		fs.StringVar(&f.site, "site", "", "site of the camera (required)")
		fs.StringVar(&f.id, "id", "", "device id of the camera (required)")
		fs.StringVar(&f.brokers, "broker", "mqtt://127.0.0.1:1883", "broker URL(s), comma-separated")
		fs.StringVar(&f.username, "username", "", "MQTT username")
		fs.StringVar(&f.zone, "zone", "", "zone: sensors of the same zone make this camera record")
		fs.IntVar(&f.priority, "priority", 0, "priority when agents are scarce (higher first)")
		fs.IntVar(&f.width, "width", 640, "frame width")
		fs.IntVar(&f.height, "height", 480, "frame height")
		fs.IntVar(&f.fps, "fps", 15, "frames per second")
		fs.IntVar(&f.quality, "quality", 70, "JPEG quality, 1-100")
		fs.DurationVar(&f.preRoll, "pre-roll", 5*time.Second, "video kept from before a detection")
		fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
		return f
	},
	run: runCamera,
}

func runCamera(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*cameraFlags)
	switch {
	case len(args) > 0:
		return usagef("unexpected argument %q", args[0])
	case f.source == "" || f.site == "" || f.id == "":
		return usagef("--source, --site and --id are required")
	case !vigilpkg.ValidName(f.site) || !vigilpkg.ValidName(f.id):
		return usagef("--site and --id must be 1-64 letters, digits, '-', '_' or '.'")
	case f.width < 16 || f.height < 16 || f.fps < 1 || f.fps > 60 || f.quality < 1 || f.quality > 100:
		return usagef("--width and --height at least 16, --fps 1..60, --quality 1..100")
	}
	log := newLogger(e.err, f.logLevel, "text").With("camera", f.id)
	limits := camera.Params{Width: f.width, Height: f.height, FPS: f.fps, Quality: f.quality}
	ring := camera.NewRing(max(f.preRoll, camera.Backfill), limits)
	cam := &camera.Camera{Site: f.site, ID: f.id, Source: ring, Log: log}
	topic := func(leaf string) string { return "vigil/" + f.site + "/" + f.id + "/" + leaf }
	meta, _ := json.Marshal(map[string]any{
		"capabilities": []string{"camera"}, "name": "vigil camera " + f.source, "zone": f.zone, "priority": f.priority,
		"camera": map[string]int{"width": f.width, "height": f.height, "fps": f.fps},
	})

	var urls []*url.URL
	for _, b := range strings.Split(f.brokers, ",") {
		u, err := mqttconn.ParseBrokerURL(b)
		if err != nil {
			return usagef("%v", err)
		}
		urls = append(urls, u)
	}
	connected := make(chan error, 1)
	cfg := autopaho.ClientConfig{
		ServerUrls: urls, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ConnectUsername: f.username, ConnectPassword: []byte(e.getenv("VIGIL_MQTT_PASSWORD")),
		ReconnectBackoff: autopaho.NewExponentialBackoff(250*time.Millisecond, 10*time.Second, 500*time.Millisecond, 2),
		WillMessage:      &paho.WillMessage{Topic: topic("status"), Payload: []byte("offline"), QoS: 1, Retain: true},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				c, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				cm.Publish(c, &paho.Publish{Topic: topic("meta"), Payload: meta, QoS: 1, Retain: true})
				cm.Publish(c, &paho.Publish{Topic: topic("status"), Payload: []byte("online"), QoS: 1, Retain: true})
				_, err := cm.Subscribe(c, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic("cmd"), QoS: 1}}})
				select {
				case connected <- err:
				default:
				}
			}()
		},
		OnConnectError: func(err error) {
			var ce *autopaho.ConnackError
			if errors.As(err, &ce) {
				select {
				case connected <- fmt.Errorf("broker refused the camera: %s", ce.Reason):
				default:
				}
			}
		},
		ClientConfig: paho.ClientConfig{ClientID: f.id, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { cam.Command(pr.Packet.Payload); return true, nil },
		}},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return err
	}
	cam.Publish = func(t string, b []byte) error {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cm.Publish(c, &paho.Publish{Topic: t, Payload: b, QoS: 1})
		return err
	}
	select {
	case err := <-connected:
		if err != nil {
			return err
		}
	case <-time.After(30 * time.Second):
		return errors.New("no broker connection within 30s")
	case <-ctx.Done():
		return nil
	}
	log.Info("camera ready", "source", f.source, "size", fmt.Sprintf("%dx%d", f.width, f.height), "fps", f.fps, "pre_roll", f.preRoll.String())
	ff := &camera.FFmpeg{Source: f.source, Params: limits, Ring: ring, Log: log}
	err = ff.Run(ctx)
	cam.Stop(true)
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cm.Publish(c, &paho.Publish{Topic: topic("status"), Payload: []byte("offline"), QoS: 1, Retain: true})
	cm.Disconnect(c)
	return err
}
