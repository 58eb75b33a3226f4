package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/users"
)

// AgentOptions configure an agent ingest benchmark.
type AgentOptions struct {
	Streams  []int         // concurrent stream counts to try, in order
	Duration time.Duration // per step
	Width    int
	Height   int
	FPS      int
	Quality  int
	Vigil    string // binary; default this executable
	Progress io.Writer
	// Transcode runs clip transcoding (ffmpeg, as vigil up does) without
	// pause during each step, to show it does not make ingest drop frames.
	Transcode bool
}

// AgentStep is one step of the sweep: N streams into one agent.
type AgentStep struct {
	Streams      int     `json:"streams"`
	FramesSent   int     `json:"frames_sent"`
	FramesStored int     `json:"frames_stored"`
	PacketsSent  uint64  `json:"packets_sent"`
	PacketsLost  uint64  `json:"packets_lost"`
	LossPct      float64 `json:"loss_pct"` // of packets
	FramesPerSec float64 `json:"frames_per_s"`
	MBPerSec     float64 `json:"mb_per_s"` // stored JPEG bytes
	AgentCPUPct  float64 `json:"agent_cpu_pct"`
	FrameBytes   int     `json:"frame_bytes"`
	Transcodes   int     `json:"transcodes,omitempty"` // clips transcoded meanwhile
}

// AgentResult is the sweep.
type AgentResult struct {
	Width, Height, FPS int
	Steps              []AgentStep `json:"steps"`
	// MaxStreams is the largest N with packet loss under 0.1%.
	MaxStreams int `json:"max_streams_under_0.1pct_loss"`
}

type noUsers struct{}

func (noUsers) Authenticate(context.Context, string, string) (*users.User, error) {
	return nil, fmt.Errorf("no users")
}

// RunAgent measures one `vigil agent` process receiving N concurrent
// RTP/JPEG streams on loopback, for each N, and stops at the first N with
// 0.1% loss or more.
func RunAgent(ctx context.Context, o AgentOptions) (*AgentResult, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "vigil-bench-agent-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mc := conf.New().MQTT
	mc.Listen, mc.WSListen, mc.Persistence = "127.0.0.1:0", "", false
	b, err := broker.Open(broker.Config{MQTT: mc, DataDir: dir}, noUsers{}, log, nil)
	if err != nil {
		return nil, err
	}
	defer b.Close()

	var mu sync.Mutex
	reports := map[string]ingest.SegmentReport{}
	var hb ingest.Heartbeat
	followAgent(b, "bench", &mu, reports, &hb)

	bin := o.Vigil
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	maxN := 0
	for _, n := range o.Streams {
		maxN = max(maxN, n)
	}
	storage := filepath.Join(dir, "clips")
	// The agent logs in as vigil up's agents do, with a credential of its
	// own.
	password := users.RandomPassword()
	b.AddCredential("agent-bench", password, &users.User{Name: "agent-bench", Role: users.RoleDevice,
		Publish: []string{"vigil/agents/bench/#"}, Subscribe: []string{"vigil/agents/bench/cmd"}}, ingest.AgentClientID("bench"))
	cmd := exec.Command(bin, "agent", "--id", "bench", "--broker", b.URL(broker.TCP), "--username", "agent-bench", "--listen", "127.0.0.1",
		"--storage", storage, "--capacity", fmt.Sprint(maxN+1), "--idle", "5s", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "VIGIL_AGENT_PASSWORD="+password)
	done, err := startProcess(cmd, dir, "agent")
	if err != nil {
		return nil, err
	}
	defer stopProcess(cmd, done)
	if err := waitCond(ctx, 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return hb.Addr != "" }); err != nil {
		return nil, fmt.Errorf("the agent did not report: %w", err)
	}
	mu.Lock()
	addr := hb.Addr
	mu.Unlock()
	host, port := splitHostPort(addr)

	frames := testFrames(o.Width, o.Height, o.Quality, 30)
	var sample string
	if o.Transcode {
		if sample, err = sampleSegment(filepath.Join(dir, "sample.mp4"), frames, o.FPS); err != nil {
			return nil, err
		}
	}
	res := &AgentResult{Width: o.Width, Height: o.Height, FPS: o.FPS}
	for _, n := range o.Streams {
		step := AgentStep{Streams: n, FrameBytes: len(frames[0])}
		ids := make([]string, n)
		for i := range n {
			ids[i] = fmt.Sprintf("n%d-s%d", n, i)
			c, _ := json.Marshal(ingest.AgentCommand{Action: "expect", StreamID: ids[i], SSRC: uint32(n*1000 + i + 1),
				Dir: "bench/" + ids[i], Segment: "seg.mp4", Duration: int(o.Duration.Seconds()) + 30})
			b.Publish(ingest.AgentTopic("bench", ingest.AgentCmd), c, false, 1)
		}
		if err := waitCond(ctx, 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if _, ok := reports[id+"/expecting"]; !ok {
					return false
				}
			}
			return true
		}); err != nil {
			return nil, fmt.Errorf("%d streams: the agent did not take them: %w", n, err)
		}
		cpu0, _ := cpuSeconds(cmd.Process.Pid)
		t0 := time.Now()
		stopTranscoding := make(chan struct{})
		transcoded := make(chan int, 1)
		go func() {
			n := 0
			defer func() { transcoded <- n }()
			if sample == "" {
				<-stopTranscoding
				return
			}
			fin := media.NewFinisher()
			for {
				select {
				case <-stopTranscoding:
					return
				default:
				}
				if _, err := fin.Finish(ctx, []string{sample}, filepath.Join(dir, "out.mp4"), ""); err == nil {
					n++
				}
			}
		}()
		var wg sync.WaitGroup
		var sendMu sync.Mutex
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := media.NewSender(host, port, uint32(n*1000+i+1), 0)
				if err != nil {
					return
				}
				tick := time.NewTicker(time.Second / time.Duration(o.FPS))
				defer tick.Stop()
				start := time.Now()
				sent := 0
				for now := range tick.C {
					if now.Sub(start) > o.Duration {
						break
					}
					s.Send(frames[sent%len(frames)], start.Add(time.Duration(sent)*time.Second/time.Duration(o.FPS)))
					sent++
				}
				s.Bye("done")
				sendMu.Lock()
				step.FramesSent += sent
				step.PacketsSent += s.Packets
				sendMu.Unlock()
			}()
		}
		wg.Wait()
		elapsed := time.Since(t0)
		close(stopTranscoding)
		step.Transcodes = <-transcoded
		if err := waitCond(ctx, 20*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if _, ok := reports[id+"/done"]; !ok {
					return false
				}
			}
			return true
		}); err != nil {
			return nil, fmt.Errorf("%d streams: no final reports: %w", n, err)
		}
		cpu1, _ := cpuSeconds(cmd.Process.Pid)
		var bytes int64
		mu.Lock()
		for _, id := range ids {
			r := reports[id+"/done"]
			step.FramesStored += r.Frames
			step.PacketsLost += r.Lost
			bytes += r.Bytes
		}
		mu.Unlock()
		// Loss counts gaps the agent saw and frames that never completed.
		missing := uint64(max(step.FramesSent-step.FramesStored, 0))
		if step.PacketsSent > 0 {
			lostPkts := max(step.PacketsLost, missing*step.PacketsSent/uint64(max(step.FramesSent, 1)))
			step.LossPct = 100 * float64(lostPkts) / float64(step.PacketsSent)
		}
		step.FramesPerSec = float64(step.FramesStored) / elapsed.Seconds()
		step.MBPerSec = float64(bytes) / elapsed.Seconds() / 1e6
		step.AgentCPUPct = 100 * (cpu1 - cpu0) / elapsed.Seconds()
		res.Steps = append(res.Steps, step)
		fmt.Fprintf(o.Progress, "  %2d streams: %5.0f frames/s  %6.2f MB/s  loss %.3f%%  agent CPU %3.0f%%  transcodes %d\n",
			n, step.FramesPerSec, step.MBPerSec, step.LossPct, step.AgentCPUPct, step.Transcodes)
		os.RemoveAll(filepath.Join(storage, "bench"))
		if step.LossPct >= 0.1 {
			break
		}
		res.MaxStreams = n
	}
	return res, nil
}

// sampleSegment writes 10 s of frames as a clip segment to transcode.
func sampleSegment(path string, frames [][]byte, fps int) (string, error) {
	w, err := media.CreateSegment(path)
	if err != nil {
		return "", err
	}
	for i := range 10 * fps {
		if err := w.Write(media.Frame{JPEG: frames[i%len(frames)], RTP: uint32(i * media.ClockRate / fps)}); err != nil {
			w.Close()
			return "", err
		}
	}
	return path, w.Close()
}

// testFrames renders n distinct test pictures with about as much detail
// as a camera's (a 640x480 frame at quality 70 is some 50 KB), so that
// senders spend no time encoding.
func testFrames(w, h, q, n int) [][]byte {
	var out [][]byte
	for i := range n {
		img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
		for y := range h {
			for x := range w {
				v := 60 + (x+y+i*7)%120 // gradients
				if (x/24+y/24+i)%5 == 0 {
					v += ((x * 7) ^ (y * 13)) & 63 // textured patches
				}
				img.Y[y*img.YStride+x] = uint8(v)
			}
		}
		for j := range img.Cb {
			img.Cb[j], img.Cr[j] = uint8(110+j%40), uint8(120+(j/7)%30)
		}
		var b bytes.Buffer
		jpeg.Encode(&b, img, &jpeg.Options{Quality: q})
		out = append(out, b.Bytes())
	}
	return out
}

func waitCond(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func splitHostPort(addr string) (string, int) {
	i := strings.LastIndexByte(addr, ':')
	var p int
	fmt.Sscan(addr[i+1:], &p)
	return addr[:i], p
}

// followAgent keeps agent id's segment reports (by stream/state) and its
// latest heartbeat, under mu.
func followAgent(b *broker.Server, id string, mu *sync.Mutex, reports map[string]ingest.SegmentReport, hb *ingest.Heartbeat) {
	b.Subscribe(ingest.AgentTopic(id, "+"), func(topic string, payload []byte, _ string) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(topic, "/segment"):
			var r ingest.SegmentReport
			if json.Unmarshal(payload, &r) == nil {
				reports[r.StreamID+"/"+r.State] = r
			}
		case strings.HasSuffix(topic, "/heartbeat"):
			json.Unmarshal(payload, hb)
		}
	})
}
