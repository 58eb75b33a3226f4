package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	vigilpkg "github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/camera"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/rtspcam"
	"github.com/vigilhq/vigil/internal/telemetry"
)

type cameraFlags struct {
	source, site, id, brokers, username, zone, logLevel string
	probe, cameraUser                                   string
	jsonOut                                             bool
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
Needs ffmpeg. The MQTT password comes from $VIGIL_MQTT_PASSWORD.

With --probe, it only asks an RTSP camera what it serves (codec,
resolution, frame rate, audio) and says whether Vigil can record it as it
is (H.264 or H.265). The camera's login: --camera-user, and the password
in $VIGIL_CAMERA_PASSWORD (never in the URL, which is printed).`,
	examples: `  vigil camera --source /dev/video0 --site home --id hall-cam --zone hall
  vigil camera --source rtsp://10.0.0.20/stream1 --site shop --id till-cam --width 1280 --height 720
  vigil camera --source clip.mp4 --site lab --id test-cam --fps 10
  vigil camera --source lavfi:testsrc --site lab --id pattern   # an ffmpeg test pattern
  VIGIL_CAMERA_PASSWORD=... vigil camera --probe rtsp://10.0.0.20:554/stream1 --camera-user admin`,
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
		fs.StringVar(&f.probe, "probe", "", "only ask this RTSP camera what it serves, and exit")
		fs.StringVar(&f.cameraUser, "camera-user", "", "the RTSP camera's username (--probe; password from $VIGIL_CAMERA_PASSWORD)")
		fs.BoolVar(&f.jsonOut, "json", false, "with --probe: print JSON")
		return f
	},
	run: runCamera,
}

func runCamera(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*cameraFlags)
	if f.probe != "" {
		return probeCamera(ctx, e, f)
	}
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
	topic := func(leaf string) string { return ingest.DeviceTopic(f.site, f.id, leaf) }
	meta, _ := json.Marshal(telemetry.Meta{
		Capabilities: []string{telemetry.CapCamera}, Name: "vigil camera " + f.source, Zone: f.zone, Priority: f.priority,
		Camera: &telemetry.CameraInfo{Width: f.width, Height: f.height, FPS: f.fps},
	})

	var conn atomic.Pointer[autopaho.ConnectionManager] // set on the first connection
	cam.Publish = func(t string, b []byte) error {
		cm := conn.Load()
		if cm == nil {
			return errors.New("not connected yet")
		}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cm.Publish(c, &paho.Publish{Topic: t, Payload: b, QoS: 1})
		return err
	}
	wait, cancelWait := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWait()
	cm, err := mqttconn.Connect(wait, ctx, mqttconn.Client{
		Brokers: strings.Split(f.brokers, ","), Username: f.username, Password: e.getenv("VIGIL_MQTT_PASSWORD"), ClientID: f.id,
		Will:          &paho.WillMessage{Topic: topic("status"), Payload: []byte("offline"), QoS: 1, Retain: true},
		Subscriptions: []paho.SubscribeOptions{{Topic: topic("cmd"), QoS: 1}},
		OnUp: func(c context.Context, cm *autopaho.ConnectionManager) error {
			conn.Store(cm)
			if _, err := cm.Publish(c, &paho.Publish{Topic: topic("meta"), Payload: meta, QoS: 1, Retain: true}); err != nil {
				return err
			}
			_, err := cm.Publish(c, &paho.Publish{Topic: topic("status"), Payload: []byte("online"), QoS: 1, Retain: true})
			return err
		},
		OnMessage: func(p *paho.Publish) { cam.Command(p.Payload) },
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
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

// probeCamera asks an RTSP camera what it serves.
func probeCamera(ctx context.Context, e *env, f *cameraFlags) error {
	src := rtspcam.Source{URL: f.probe, Username: f.cameraUser, Password: e.getenv("VIGIL_CAMERA_PASSWORD")}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	info, err := rtspcam.Probe(ctx, src, 10*time.Second)
	if err != nil {
		return err
	}
	if f.jsonOut {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	size := "size unknown"
	if info.Width > 0 {
		size = fmt.Sprintf("%dx%d", info.Width, info.Height)
	}
	fps := "rate unknown"
	if info.FPS > 0 {
		fps = fmt.Sprintf("%g fps", info.FPS)
	}
	video := info.Video
	if video == "" {
		video = "no video"
	}
	fmt.Fprintf(e.out, "%s: %s %s %s", info.URL, video, size, fps)
	if info.Audio != "" {
		fmt.Fprintf(e.out, ", audio %s", info.Audio)
	}
	if info.Recordable {
		fmt.Fprintln(e.out, "; Vigil records it as it is (no re-encoding)")
	} else {
		fmt.Fprintln(e.out, "; not H.264 or H.265: record it through `vigil camera --source` (JPEG)")
	}
	return nil
}
