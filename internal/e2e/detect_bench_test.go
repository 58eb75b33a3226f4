package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/ingest"
)

// BenchmarkDetectionToCamera measures how long an intrusion takes to reach
// a camera: from a motion sensor's message to the camera's "stream"
// command (detection, the coordinator, an agent told to expect the
// stream), with the storage idle, with its queue full (a fleet publishing
// QoS 1 readings as fast as they are acknowledged into a queue of 8), and
// with the disk full (the data directory on a small tmpfs, filled; as
// root only). Each iteration is a new camera's first detection. It reports
// p50 and p95 in ms:
//
//	go test ./internal/e2e -run '^$' -bench DetectionToCamera -benchtime 30x
func BenchmarkDetectionToCamera(b *testing.B) {
	for _, tc := range []struct {
		name     string
		queue    string
		load     bool
		diskFull bool
	}{
		{"idle", "50000", false, false},
		{"queue_full", "8", true, false},
		{"disk_full", "50000", true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			if tc.diskFull {
				dir = smallDisk(b)
			}
			vp := startVigilProcess(b, dir, "VIGIL_TELEMETRY_QUEUE_SIZE="+tc.queue, "VIGIL_DETECTION_CONSECUTIVE=1",
				"VIGIL_RECORDING_CLIP_SECONDS=1", "VIGIL_RECORDING_PRE_ROLL_SECONDS=0", "VIGIL_AGENTS_IDLE=1s")
			cams := make([]*fakeCamera, b.N)
			for i := range cams {
				cams[i] = newFakeCamera(b, vp.addr, "bench", fmt.Sprintf("cam%03d", i))
			}
			time.Sleep(time.Second) // the coordinator has every camera's meta
			if tc.diskFull {
				fill(b, dir)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.load {
				loadFleet(ctx, vp.addr, 24)
				time.Sleep(2 * time.Second)
			}
			sensor, _, err := mqttConnect(b, vp.addr, "bench-sensor", "", "")
			if err != nil {
				b.Fatal(err)
			}
			var took []time.Duration
			b.ResetTimer()
			for i := range b.N {
				cam := cams[i]
				start := time.Now()
				if _, err := sensor.Publish(ctx, &paho.Publish{Topic: "vigil/bench/" + cam.id + "/motion", QoS: 0, Payload: []byte(`{"detected":true}`)}); err != nil {
					b.Fatal(err)
				}
				select {
				case at := <-cam.commanded:
					took = append(took, at.Sub(start))
				case <-time.After(60 * time.Second):
					b.Fatalf("camera %d got no stream command within a minute", i)
				}
				time.Sleep(300 * time.Millisecond)
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(took[len(took)*95/100].Microseconds())/1000, "p95_ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// fakeCamera announces a camera and notes when it is told to stream; it
// says "quit" at once, so that its agent has room for the next.
type fakeCamera struct {
	id        string
	commanded chan time.Time
}

func newFakeCamera(tb testing.TB, addr, site, id string) *fakeCamera {
	fc := &fakeCamera{id: id, commanded: make(chan time.Time, 4)}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	var c *paho.Client
	c = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(p paho.PublishReceived) (bool, error) {
			var cmd ingest.StreamCommand
			if json.Unmarshal(p.Packet.Payload, &cmd) == nil && cmd.Action == "stream" {
				fc.commanded <- time.Now()
				b, _ := json.Marshal(ingest.CameraStreamEvent{StreamID: cmd.StreamID, State: ingest.CameraQuit})
				go c.Publish(context.Background(), &paho.Publish{Topic: ingest.CameraTopic(site, id, "stream"), QoS: 0, Payload: b})
			}
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: ingest.CameraTopic(site, id, "cmd"), QoS: 1}}}); err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Publish(ctx, &paho.Publish{Topic: ingest.CameraTopic(site, id, "meta"), QoS: 0, Retain: true,
		Payload: []byte(`{"capabilities":["motion","camera"]}`)}); err != nil {
		tb.Fatal(err)
	}
	return fc
}

// loadFleet runs devices that publish QoS 1 readings as fast as they are
// acknowledged, reconnecting when the broker drops them (a reading it
// could not store), until ctx ends.
func loadFleet(ctx context.Context, addr string, devices int) {
	for i := range devices {
		dev := fmt.Sprintf("load-%02d", i)
		go func() {
			for ctx.Err() == nil {
				conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				c := paho.NewClient(paho.ClientConfig{Conn: conn})
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = c.Connect(cctx, &paho.Connect{ClientID: dev, KeepAlive: 30, CleanStart: true})
				cancel()
				for seq := 1; err == nil && ctx.Err() == nil; seq++ {
					pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err = c.Publish(pctx, &paho.Publish{Topic: "vigil/load/" + dev + "/telemetry", QoS: 1,
						Payload: fmt.Appendf(nil, `{"value":%d,"units":"C"}`, seq%40)})
					cancel()
				}
				conn.Close()
			}
		}()
	}
}

// smallDisk mounts a 64 MiB tmpfs for a data directory (root only).
func smallDisk(tb testing.TB) string {
	if os.Geteuid() != 0 {
		tb.Skip("mounting a small disk needs root")
	}
	dir := tb.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir).CombinedOutput(); err != nil {
		tb.Skipf("mount tmpfs: %v: %s", err, out)
	}
	tb.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill takes the rest of dir's file system.
func fill(tb testing.TB, dir string) {
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			return // full
		}
	}
}
