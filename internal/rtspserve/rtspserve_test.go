package rtspserve_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/rtspserve"
	"github.com/vigilhq/vigil/internal/testpeer"
)

const (
	fps      = 15
	frameDur = 90000 / fps // 90 kHz
)

// video makes a 2 s MP4 at 15 fps with a keyframe every second, with
// ffmpeg's libx264 or libx265 (B-frames included, as ffmpeg likes).
func video(t *testing.T, codec string, w, h int) string {
	t.Helper()
	ffmpeg := testpeer.Need(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), codec+"-"+strconv.Itoa(w)+".mp4")
	enc := map[string][]string{
		"h264": {"-c:v", "libx264"},
		"h265": {"-c:v", "libx265", "-x265-params", "log-level=error"},
	}[codec]
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", "testsrc2=size=" + strconv.Itoa(w) + "x" + strconv.Itoa(h) + ":rate=" + strconv.Itoa(fps),
		"-t", "2", "-g", strconv.Itoa(fps), "-pix_fmt", "yuv420p"}
	args = append(append(args, enc...), "-f", "mp4", out)
	if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return out
}

func start(t *testing.T, cfg rtspserve.Config) *rtspserve.Server {
	t.Helper()
	s, err := rtspserve.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// unit is an access unit as a client got it.
type unit struct {
	nalus [][]byte
	ts    uint32 // RTP timestamp
	pts   int64  // the client's PacketPTS
	ptsOK bool
	at    time.Time
}

// reader is a gortsplib client that plays a stream and collects its
// access units.
type reader struct {
	c     *gortsplib.Client
	codec string

	mu    sync.Mutex
	pkts  int // RTP packets, garbage included
	units []unit
	first *unit // the first packet with a PacketPTS, as a unit of one packet
}

func play(t *testing.T, url string, proto gortsplib.Protocol) *reader {
	t.Helper()
	r, err := dial(url, proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.c.Close)
	return r
}

func dial(url string, proto gortsplib.Protocol) (*reader, error) {
	u, err := base.ParseURL(url)
	if err != nil {
		return nil, err
	}
	r := &reader{c: &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Protocol: &proto, ReadTimeout: 3 * time.Second}}
	if err := r.c.Start(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			r.c.Close()
		}
	}()
	desc, _, err := r.c.Describe(u)
	if err != nil {
		return nil, err
	}
	var decode func(*rtp.Packet) ([][]byte, error)
	var medi *description.Media
	var forma format.Format
	var f264 *format.H264
	var f265 *format.H265
	if medi = desc.FindFormat(&f264); medi != nil {
		d, err := f264.CreateDecoder()
		if err != nil {
			return nil, err
		}
		r.codec, forma, decode = "H264", f264, d.Decode
	} else if medi = desc.FindFormat(&f265); medi != nil {
		d, err := f265.CreateDecoder()
		if err != nil {
			return nil, err
		}
		r.codec, forma, decode = "H265", f265, d.Decode
	} else {
		return nil, errors.New("no H.264 or H.265 media")
	}
	if _, err := r.c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		return nil, err
	}
	r.c.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
		now := time.Now()
		pts, ptsOK := r.c.PacketPTS(medi, pkt)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.pkts++
		if ptsOK && r.first == nil {
			r.first = &unit{ts: pkt.Timestamp, pts: pts, ptsOK: true, at: now}
		}
		au, err := decode(pkt)
		if err != nil {
			return
		}
		r.units = append(r.units, unit{nalus: au, ts: pkt.Timestamp, pts: pts, ptsOK: ptsOK, at: now})
	})
	if _, err := r.c.Play(nil); err != nil {
		return nil, err
	}
	ok = true
	return r, nil
}

func (r *reader) got() []unit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]unit(nil), r.units...)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isKey(codec string, au [][]byte) bool {
	if codec == "H265" {
		return h265.IsRandomAccess(au)
	}
	return h264.IsRandomAccess(au)
}

// paramsFirst tells whether a keyframe starts with its parameter sets.
func paramsFirst(codec string, au [][]byte) bool {
	var want []int
	var typ func([]byte) int
	if codec == "H265" {
		want = []int{int(h265.NALUType_VPS_NUT), int(h265.NALUType_SPS_NUT), int(h265.NALUType_PPS_NUT)}
		typ = func(n []byte) int { return int((n[0] >> 1) & 0x3f) }
	} else {
		want = []int{int(h264.NALUTypeSPS), int(h264.NALUTypePPS)}
		typ = func(n []byte) int { return int(n[0] & 0x1f) }
	}
	if len(au) <= len(want) {
		return false
	}
	for i, w := range want {
		if typ(au[i]) != w {
			return false
		}
	}
	return true
}

// Clients over TCP and UDP get H.264 and H.265 at 15 fps, starting with a
// keyframe that carries its parameter sets, looping past the file's end
// with the timeline going on.
func TestPlay(t *testing.T) {
	for _, codec := range []string{"h264", "h265"} {
		file := video(t, codec, 640, 360)
		for _, proto := range []gortsplib.Protocol{gortsplib.ProtocolTCP, gortsplib.ProtocolUDP} {
			t.Run(codec+"/"+proto.String(), func(t *testing.T) {
				t.Parallel()
				s := start(t, rtspserve.Config{File: file, UDP: true})
				time.Sleep(300 * time.Millisecond) // join mid-GOP, as clients do
				r := play(t, s.URL(), proto)
				if got := r.c.Transport().Session.Protocol; got != proto {
					t.Fatalf("transport %v, want %v", got, proto)
				}
				waitFor(t, 2*time.Second, "a reader", func() bool { return s.Readers() == 1 })
				// 40 frames take 2.7 s: past the 2 s file's end.
				waitFor(t, 8*time.Second, "40 access units", func() bool { return len(r.got()) >= 40 })
				checkPlay(t, s, r)
			})
		}
	}
}

func checkPlay(t *testing.T, s *rtspserve.Server, r *reader) {
	units := r.got()

	// About 15 fps.
	span := units[len(units)-1].at.Sub(units[0].at).Seconds()
	if rate := float64(len(units)-1) / span; rate < 12 || rate > 18 {
		t.Errorf("%.1f fps, want about %d", rate, fps)
	}

	// The first unit a decoder can use is a keyframe with its parameters;
	// every keyframe has them.
	k := 0
	for k < len(units) && !isKey(r.codec, units[k].nalus) {
		k++
	}
	if k == len(units) {
		t.Fatal("no keyframe")
	}
	var keyTS []int64
	for _, u := range units[k:] {
		if isKey(r.codec, u.nalus) {
			if !paramsFirst(r.codec, u.nalus) {
				t.Errorf("keyframe at %d without parameter sets in front", u.ts)
			}
			keyTS = append(keyTS, int64(u.ts))
		}
	}

	// Keyframes come every second of the timeline, across the loop: the
	// 2 s file was played past its end.
	if len(keyTS) < 2 {
		t.Fatalf("keyframes at %v", keyTS)
	}
	for i := 1; i < len(keyTS); i++ {
		if keyTS[i]-keyTS[i-1] != fps*frameDur {
			t.Errorf("keyframes at %v, want one every %d ticks", keyTS, fps*frameDur)
			break
		}
	}
	if last := int64(units[len(units)-1].ts); last < 2*90000 {
		t.Errorf("last timestamp %d: the loop did not go past the file's end", last)
	}

	// The client's PacketPTS starts at 0 on the first keyframe packet it
	// gets, while the RTP timestamp is the server's PTS.
	r.mu.Lock()
	first := r.first
	r.mu.Unlock()
	if first == nil || first.pts != 0 {
		t.Fatalf("first packet with a PTS: %+v, want PTS 0", first)
	}
	if first.ts != uint32(keyTS[0]) || first.ts == 0 {
		t.Errorf("first PTS'd packet has timestamp %d; first keyframe %d (the server was 0.3 s in)", first.ts, keyTS[0])
	}
	for _, u := range units[k:] {
		// B-frames can come before the keyframe in presentation order.
		if want := int64(int32(u.ts - first.ts)); !u.ptsOK || u.pts != want {
			t.Fatalf("PacketPTS %d for timestamp %d, want %d", u.pts, u.ts, want)
		}
	}

	// SendTime finds each unit by its RTP timestamp, a moment before the
	// client got it.
	var worst time.Duration
	for _, u := range units {
		at, ok := s.SendTime(int64(u.ts))
		if !ok {
			t.Fatalf("no send time for %d", u.ts)
		}
		if lat := u.at.Sub(at); lat < 0 {
			t.Fatalf("received %v before it was sent", -lat)
		} else if lat > worst {
			worst = lat
		}
	}
	if worst > 300*time.Millisecond {
		t.Errorf("worst latency %v on loopback", worst)
	}
	if _, ok := s.SendTime(int64(first.ts) + 1); ok {
		t.Error("a send time for a timestamp never sent")
	}
	if n := s.Frames(); n < uint64(len(units)) {
		t.Errorf("Frames() = %d, the client got %d", n, len(units))
	}
}

// The stream's timeline starts at 0 and follows the wall clock.
func TestTimeline(t *testing.T) {
	s := start(t, rtspserve.Config{File: video(t, "h264", 320, 240)})
	t0 := time.Now()
	r := play(t, s.URL(), gortsplib.ProtocolTCP)
	waitFor(t, 3*time.Second, "frames", func() bool { return len(r.got()) > 5 })
	at0, ok := s.SendTime(0)
	if !ok {
		t.Fatal("no frame with PTS 0")
	}
	if d := at0.Sub(t0); d < -time.Second || d > time.Second {
		t.Errorf("PTS 0 sent %v after Start returned", d)
	}
	for _, u := range r.got() {
		at, _ := s.SendTime(int64(u.ts))
		want := at0.Add(time.Duration(u.ts) * time.Second / 90000)
		// B-frames are sent up to two frames off their PTS.
		if d := at.Sub(want); d < -150*time.Millisecond || d > 200*time.Millisecond {
			t.Errorf("PTS %d sent %v off its time", u.ts, d)
		}
	}
}

// DropSessions ends every client's session; the server takes new ones.
func TestDropSessions(t *testing.T) {
	file := video(t, "h264", 320, 240)
	for _, proto := range []gortsplib.Protocol{gortsplib.ProtocolTCP, gortsplib.ProtocolUDP} {
		t.Run(proto.String(), func(t *testing.T) {
			t.Parallel()
			s := start(t, rtspserve.Config{File: file, UDP: true})
			r1 := play(t, s.URL(), proto)
			r2 := play(t, s.URL(), proto)
			waitFor(t, 3*time.Second, "two readers", func() bool { return s.Readers() == 2 })
			waitFor(t, 3*time.Second, "frames", func() bool { return len(r1.got()) > 3 })

			done := make(chan error, 2)
			go func() { done <- r1.c.Wait() }()
			go func() { done <- r2.c.Wait() }()
			s.DropSessions()
			for range 2 {
				select {
				case err := <-done:
					if err == nil {
						t.Error("Wait returned no error")
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the client did not notice")
				}
			}
			waitFor(t, 3*time.Second, "no readers", func() bool { return s.Readers() == 0 })

			r3 := play(t, s.URL(), proto)
			waitFor(t, 3*time.Second, "frames after reconnecting", func() bool { return len(r3.got()) > 3 })
		})
	}
}

// Pause stops frames for a while; the timeline jumps by the pause.
func TestPause(t *testing.T) {
	s := start(t, rtspserve.Config{File: video(t, "h264", 320, 240)})
	r := play(t, s.URL(), gortsplib.ProtocolTCP)
	waitFor(t, 3*time.Second, "frames", func() bool { return len(r.got()) > 3 })
	s.Pause(time.Second)
	time.Sleep(1500 * time.Millisecond)
	units := r.got()
	gap := -1
	for i := 1; i < len(units); i++ {
		if units[i].at.Sub(units[i-1].at) > 800*time.Millisecond {
			gap = i
		}
	}
	if gap < 0 {
		t.Fatal("no pause seen")
	}
	// A second and a frame, give or take two frames of B-frame reordering.
	if d := int64(units[gap].ts) - int64(units[gap-1].ts); d < 90000-2*frameDur || d > 90000+3*frameDur+9000 {
		t.Errorf("timestamps %d then %d across a 1 s pause", units[gap-1].ts, units[gap].ts)
	}
}

// Garbage RTP does not hurt the server; clients keep getting frames.
func TestInjectGarbage(t *testing.T) {
	s := start(t, rtspserve.Config{File: video(t, "h264", 320, 240), UDP: true})
	r := play(t, s.URL(), gortsplib.ProtocolTCP)
	ru := play(t, s.URL(), gortsplib.ProtocolUDP)
	waitFor(t, 3*time.Second, "frames", func() bool { return len(r.got()) > 3 })
	packets := func(r *reader) int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.pkts
	}
	p, pu := packets(r), packets(ru)
	for range 5 {
		s.InjectGarbage(40)
		time.Sleep(50 * time.Millisecond)
	}
	// 200 garbage packets arrive; the few frames of 0.3 s are far fewer.
	waitFor(t, 2*time.Second, "the garbage", func() bool { return packets(r) >= p+200 && packets(ru) >= pu+200 })
	n, nu, f := len(r.got()), len(ru.got()), s.Frames()
	waitFor(t, 3*time.Second, "frames after the garbage", func() bool {
		return len(r.got()) > n+5 && len(ru.got()) > nu+5 && s.Frames() > f+5
	})
	if s.Readers() != 2 {
		t.Errorf("%d readers", s.Readers())
	}
	play(t, s.URL(), gortsplib.ProtocolTCP)
}

// SwitchFile goes on with another resolution at a keyframe, with the new
// SPS in-band and the timeline unbroken.
func TestSwitchFile(t *testing.T) {
	for _, codec := range []string{"h264", "h265"} {
		t.Run(codec, func(t *testing.T) {
			t.Parallel()
			s := start(t, rtspserve.Config{File: video(t, codec, 640, 360)})
			small := video(t, codec, 320, 240)
			r := play(t, s.URL(), gortsplib.ProtocolTCP)
			waitFor(t, 3*time.Second, "frames", func() bool { return len(r.got()) > 3 })
			if err := s.SwitchFile(small); err != nil {
				t.Fatal(err)
			}
			size := func(u unit) (int, int) {
				for _, n := range u.nalus {
					if r.codec == "H265" && h265.NALUType((n[0]>>1)&0x3f) == h265.NALUType_SPS_NUT {
						var sps h265.SPS
						if sps.Unmarshal(n) == nil {
							return sps.Width(), sps.Height()
						}
					}
					if r.codec == "H264" && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
						var sps h264.SPS
						if sps.Unmarshal(n) == nil {
							return sps.Width(), sps.Height()
						}
					}
				}
				return 0, 0
			}
			switched := -1
			waitFor(t, 3*time.Second, "a 320x240 SPS", func() bool {
				for i, u := range r.got() {
					if w, h := size(u); w == 320 && h == 240 {
						switched = i
						return true
					}
				}
				return false
			})
			units := r.got()
			var prevKey int64 = -1
			for _, u := range units[:switched] {
				if w, h := size(u); w != 0 && (w != 640 || h != 360) {
					t.Errorf("%dx%d before the switch", w, h)
				}
				if isKey(r.codec, u.nalus) {
					prevKey = int64(u.ts)
				}
			}
			if !isKey(r.codec, units[switched].nalus) || !paramsFirst(r.codec, units[switched].nalus) {
				t.Error("the new file does not start with a keyframe and its parameters")
			}
			if prevKey >= 0 && int64(units[switched].ts)-prevKey != fps*frameDur {
				t.Errorf("keyframes at %d then %d across the switch", prevKey, units[switched].ts)
			}
			if err := s.SwitchFile(filepath.Join(t.TempDir(), "none.mp4")); err == nil {
				t.Error("switched to a missing file")
			}
		})
	}
}

// With a login set, clients need it; other paths are not found.
func TestAuthAndPath(t *testing.T) {
	s := start(t, rtspserve.Config{File: video(t, "h264", 320, 240), Path: "/live", Username: "u", Password: "p w"})
	if _, err := dial(s.URL(), gortsplib.ProtocolTCP); err == nil {
		t.Error("played without a login")
	}
	good := "rtsp://u:p%20w@" + s.URL()[len("rtsp://"):]
	r, err := dial(good, gortsplib.ProtocolTCP)
	if err != nil {
		t.Fatal(err)
	}
	defer r.c.Close()
	waitFor(t, 3*time.Second, "frames", func() bool { return len(r.got()) > 0 })
	if _, err := dial("rtsp://u:p%20w@"+s.URL()[len("rtsp://"):len(s.URL())-len("/live")]+"/other", gortsplib.ProtocolTCP); err == nil {
		t.Error("played a path that does not exist")
	}
}

// Files that are not MP4 with H.264 or H.265 are refused.
func TestBadFile(t *testing.T) {
	if _, err := rtspserve.Start(rtspserve.Config{File: filepath.Join(t.TempDir(), "none.mp4")}); err == nil {
		t.Error("started without a file")
	}
	ffmpeg := testpeer.Need(t, "ffmpeg")
	mjpeg := filepath.Join(t.TempDir(), "mjpeg.mp4")
	if b, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5",
		"-t", "1", "-c:v", "mjpeg", "-f", "mp4", mjpeg).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	if _, err := rtspserve.Start(rtspserve.Config{File: mjpeg}); err == nil {
		t.Error("started with M-JPEG")
	}
}

// Files laid out otherwise play too: index first, audio before video.
func TestFileLayouts(t *testing.T) {
	ffmpeg := testpeer.Need(t, "ffmpeg")
	for name, extra := range map[string][]string{
		"faststart":   {"-movflags", "+faststart"},
		"audio-first": {"-map", "1:a", "-map", "0:v", "-c:a", "aac"},
	} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), name+".mp4")
			args := []string{"-hide_banner", "-loglevel", "error",
				"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15", "-f", "lavfi", "-i", "sine",
				"-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p"}
			args = append(append(args, extra...), "-f", "mp4", out)
			if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
				t.Fatalf("ffmpeg: %v: %s", err, b)
			}
			s := start(t, rtspserve.Config{File: out})
			r := play(t, s.URL(), gortsplib.ProtocolTCP)
			waitFor(t, 3*time.Second, "a keyframe", func() bool {
				for _, u := range r.got() {
					if isKey(r.codec, u.nalus) {
						return true
					}
				}
				return false
			})
		})
	}
}
