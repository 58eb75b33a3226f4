package camera

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/jpeg"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

func testJPEG(t testing.TB, q int) []byte {
	img := image.NewYCbCr(image.Rect(0, 0, 64, 48), image.YCbCrSubsampleRatio420)
	for i := range img.Y {
		img.Y[i] = uint8(i * 7)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSplitJPEGs(t *testing.T) {
	a, b := testJPEG(t, 90), testJPEG(t, 1) // quality 1: tables full of 0xFF
	var stream bytes.Buffer
	stream.WriteString("garbage")
	stream.Write(a)
	stream.Write(b)
	stream.Write(a[:len(a)/2]) // cut off
	var got [][]byte
	if err := SplitJPEGs(&stream, func(j []byte) { got = append(got, j) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !bytes.Equal(got[0], a) || !bytes.Equal(got[1], b) {
		t.Fatalf("got %d images", len(got))
	}
}

func FuzzSplitJPEGs(f *testing.F) {
	f.Add(append(testJPEG(f, 50), testJPEG(f, 5)...))
	f.Add([]byte{0xff, 0xd8, 0xff, 0xda, 0, 2, 0xff, 0, 0xff, 0xd9})
	f.Fuzz(func(t *testing.T, data []byte) {
		SplitJPEGs(bytes.NewReader(data), func(j []byte) {
			if len(j) < 4 || j[0] != 0xff || j[1] != 0xd8 || j[len(j)-2] != 0xff || j[len(j)-1] != 0xd9 {
				t.Fatalf("not a whole image: %x", j)
			}
		})
	})
}

func TestRingStreamsBacklogThenLive(t *testing.T) {
	r := NewRing(2*time.Second, Params{Width: 64, Height: 48, FPS: 10, Quality: 70})
	t0 := time.Now()
	for i := range 30 { // 3 s of frames; the ring keeps 2 s
		r.Add(Frame{JPEG: []byte{byte(i)}, At: t0.Add(time.Duration(i-30) * 100 * time.Millisecond)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := r.Stream(ctx, t0.Add(-time.Second), t0.Add(300*time.Millisecond), Params{})
	var got []byte
	for i := range 10 { // the backlog: the last second
		f := <-ch
		got = append(got, f.JPEG[0])
		if i == 9 {
			break
		}
	}
	for i := range 2 { // then live frames
		r.Add(Frame{JPEG: []byte{byte(100 + i)}, At: time.Now()})
		got = append(got, (<-ch).JPEG[0])
	}
	if got[0] != 20 || got[9] != 29 || got[10] != 100 || got[11] != 101 {
		t.Fatalf("frames %v", got)
	}
	if _, open := <-ch; open {
		// the stream ends at `until`
		for range ch {
		}
	}
}

// fakeSource sends n frames from `from`, 100 ms apart, none before from.
type fakeSource struct{ jpeg []byte }

func (f fakeSource) Limits() Params { return Params{Width: 64, Height: 48, FPS: 10, Quality: 70} }
func (f fakeSource) Stream(ctx context.Context, from, until time.Time, _ Params) <-chan Frame {
	out := make(chan Frame)
	go func() {
		defer close(out)
		for at := from; !at.After(until); at = at.Add(100 * time.Millisecond) {
			if d := time.Until(at); d > 0 {
				time.Sleep(d) // pacing, not synchronisation: a live source's frames come at their time
			}
			select {
			case out <- Frame{JPEG: f.jpeg, At: at}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func TestACameraStreamsPreRollThenLiveAndSaysQuit(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rtcpConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: conn.LocalAddr().(*net.UDPAddr).Port + 1})
	if err != nil {
		t.Skip("the RTCP port is taken")
	}
	defer rtcpConn.Close()
	var mu sync.Mutex
	var reports []ingest.CameraStreamEvent
	c := &Camera{Site: "s", ID: "c", Source: fakeSource{testJPEG(t, 70)}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Publish: func(topic string, payload []byte) error {
			var e ingest.CameraStreamEvent
			json.Unmarshal(payload, &e)
			mu.Lock()
			reports = append(reports, e)
			mu.Unlock()
			return nil
		}}
	cmd, _ := json.Marshal(ingest.StreamCommand{Action: "stream", StreamID: "x", Host: "127.0.0.1", Port: conn.LocalAddr().(*net.UDPAddr).Port,
		SSRC: 77, Duration: 1, PreRoll: 1})
	c.Command(cmd)
	rx, _ := media.NewReceiver(77, nil)
	defer rx.Close()
	buf := make([]byte, 2048)
	var frames []media.Frame
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(frames) < 19 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d frames: %v", len(frames), err)
		}
		var p rtp.Packet
		p.Unmarshal(append([]byte(nil), buf[:n]...))
		fs, _ := rx.Push(&p, time.Now())
		frames = append(frames, fs...)
	}
	// 1 s of pre-roll and 1 s live at 10 fps, with RTP times 100 ms apart.
	for i := 1; i < len(frames); i++ {
		if d := frames[i].RTP - frames[i-1].RTP; d < 8900 || d > 9100 {
			t.Fatalf("frame %d is %d ticks after the last", i, d)
		}
	}
	rtcpConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := rtcpConn.Read(buf)
	if err != nil {
		t.Fatalf("no RTCP BYE: %v", err)
	}
	if ssrcs, err := media.ByeSSRCs(buf[:n]); err != nil || len(ssrcs) != 1 {
		t.Fatalf("RTCP BYE for %v: %v", ssrcs, err)
	}
	testkit.WaitFor(t, 5*time.Second, "the started and quit reports", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reports) >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 2 || reports[0].State != "started" || reports[1].State != "quit" {
		t.Errorf("reports %+v", reports)
	}
}

func TestFFmpegSourceReadsATestPattern(t *testing.T) {
	bin := testpeer.Need(t, "ffmpeg")
	r := NewRing(time.Second, Params{Width: 160, Height: 120, FPS: 10, Quality: 70})
	f := &FFmpeg{Bin: bin, Source: "lavfi:testsrc=size=320x240:rate=25", Params: r.Limits(), Ring: r, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	ch := r.Stream(ctx, time.Now(), time.Now().Add(time.Minute), Params{})
	for range 5 {
		select {
		case fr := <-ch:
			cfg, err := jpeg.DecodeConfig(bytes.NewReader(fr.JPEG))
			if err != nil || cfg.Width != 160 || cfg.Height != 120 {
				t.Fatalf("frame: %v %+v", err, cfg)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no frames from ffmpeg")
		}
	}
	cancel()
	<-done
}

// udpFrames receives an RTP/JPEG stream on a loopback port.
type udpFrames struct {
	conn *net.UDPConn
	rx   *media.Receiver
}

func listenFrames(t *testing.T) *udpFrames {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rx, _ := media.NewReceiver(77, nil)
	t.Cleanup(func() { rx.Close() })
	return &udpFrames{conn: conn, rx: rx}
}

func (u *udpFrames) port() int { return u.conn.LocalAddr().(*net.UDPAddr).Port }

// read returns the next n frames.
func (u *udpFrames) read(t *testing.T, n int) []media.Frame {
	t.Helper()
	buf := make([]byte, 2048)
	var frames []media.Frame
	u.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(frames) < n {
		k, err := u.conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d frames: %v", len(frames), err)
		}
		var p rtp.Packet
		p.Unmarshal(append([]byte(nil), buf[:k]...))
		fs, _ := u.rx.Push(&p, time.Now())
		frames = append(frames, fs...)
	}
	return frames
}

// A stream moved to another agent goes on on the same RTP timeline, and
// starts with the frames taken since the coordinator's Since, which the
// agent it left may not have stored; nothing is sent twice to the new one.
func TestAMovedStreamResendsWhatTheLastAgentMayHaveMissed(t *testing.T) {
	a, b := listenFrames(t), listenFrames(t)
	c := &Camera{Site: "s", ID: "c", Source: fakeSource{testJPEG(t, 70)}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Publish: func(string, []byte) error { return nil }}
	defer c.Stop(false)
	cmd, _ := json.Marshal(ingest.StreamCommand{Action: "stream", StreamID: "x", Host: "127.0.0.1", Port: a.port(), SSRC: 77, Duration: 10})
	c.Command(cmd)
	atA := a.read(t, 10)
	// A second before the stream started: the camera has the frames.
	since := time.Now().Add(-2 * time.Second)
	cmd, _ = json.Marshal(ingest.StreamCommand{Action: "stream", StreamID: "x", Host: "127.0.0.1", Port: b.port(), SSRC: 77, Duration: 9,
		Resume: true, Since: since.UnixMilli()})
	c.Command(cmd)
	atB := b.read(t, 20)
	// B's first frame is from about a second before A's first, on A's
	// timeline.
	if back := int32(atA[0].RTP - atB[0].RTP); back < 0.8*media.ClockRate || back > 1.2*media.ClockRate {
		t.Fatalf("the new agent's first frame is %d ticks before the old one's first, want about a second (90000)", back)
	}
	for i := 1; i < len(atB); i++ {
		if d := atB[i].RTP - atB[i-1].RTP; d < 8900 || d > 9100 {
			t.Fatalf("frame %d at the new agent is %d ticks after the last (sent twice, or missing)", i, int32(d))
		}
	}
}
