package media

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format/rtpmjpeg"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/testpeer"
)

// testJPEG makes a distinct 320x240 JPEG for frame i.
func testJPEG(t testing.TB, i int) []byte {
	img := image.NewYCbCr(image.Rect(0, 0, 320, 240), image.YCbCrSubsampleRatio420)
	for y := range 240 {
		for x := range 320 {
			img.Y[y*img.YStride+x] = uint8(x + y + i*7)
		}
	}
	// a block that moves, so that frames differ visibly
	for y := 100; y < 140; y++ {
		for x := (i * 5) % 280; x < (i*5)%280+40; x++ {
			img.Y[y*img.YStride+x] = 255
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 70}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// packets encodes n frames at 15 fps as RTP/JPEG.
func packets(t testing.TB, ssrc uint32, n int) [][]*rtp.Packet {
	enc := &rtpmjpeg.Encoder{SSRC: &ssrc, PayloadMaxSize: 1200}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	var out [][]*rtp.Packet
	for i := range n {
		pkts, err := enc.Encode(testJPEG(t, i))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			p.Timestamp = uint32(i * ClockRate / 15)
		}
		out = append(out, pkts)
	}
	return out
}

func TestReceiverReassemblesFramesDespiteReorderingAndDuplicates(t *testing.T) {
	frames := packets(t, 42, 30)
	var all []*rtp.Packet
	for _, f := range frames {
		all = append(all, f...)
	}
	// Shuffle within windows of 8 (but the first: a receiver latches onto
	// the first packet it sees) and duplicate every 10th packet.
	rng := rand.New(rand.NewPCG(1, 2))
	var wire []*rtp.Packet
	for i := 0; i < len(all); i += 8 {
		w := append([]*rtp.Packet(nil), all[i:min(i+8, len(all))]...)
		if i > 0 {
			rng.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
		}
		for j, p := range w {
			wire = append(wire, p)
			if (i+j)%10 == 0 {
				wire = append(wire, p)
			}
		}
	}
	r, err := NewReceiver(42, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []Frame
	for _, p := range wire {
		fs, err := r.Push(p, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fs...)
	}
	st := r.Stats()
	// The last frame may wait in the reorder buffer; all others arrive.
	if len(got) < 29 || st.Lost != 0 || st.BadFrames != 0 {
		t.Fatalf("%d frames, stats %+v", len(got), st)
	}
	for i, f := range got {
		if _, err := jpeg.Decode(bytes.NewReader(f.JPEG)); err != nil {
			t.Fatalf("frame %d does not decode: %v", i, err)
		}
		if f.RTP != uint32(i*ClockRate/15) {
			t.Fatalf("frame %d has RTP time %d", i, f.RTP)
		}
	}
}

func TestReceiverCountsLossAndBadFramesAndRefusesOtherStreams(t *testing.T) {
	frames := packets(t, 7, 20)
	r, _ := NewReceiver(7, nil)
	defer r.Close()
	var got int
	for i, f := range frames {
		for j, p := range f {
			if i == 5 && j == 1 { // a fragment of frame 5 never arrives
				continue
			}
			fs, _ := r.Push(p, time.Now())
			got += len(fs)
		}
	}
	// Flush the reorder buffer with more frames.
	for _, f := range packets(t, 7, 5) {
		for _, p := range f {
			p.SequenceNumber += uint16(len(frames) * 100)
		}
	}
	st := r.Stats()
	if st.Lost != 1 || st.BadFrames == 0 || got >= 20 || got < 15 {
		t.Fatalf("got %d frames, stats %+v", got, st)
	}
	other := frames[0][0]
	other.SSRC = 8
	if _, err := r.Push(other, time.Now()); err != ErrWrongSSRC {
		t.Errorf("packet of another SSRC: %v", err)
	}
	notJPEG := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 7}, Payload: []byte{1, 2, 3}}
	if _, err := r.Push(notJPEG, time.Now()); err == nil || r.Stats().Invalid != 1 {
		t.Errorf("non-JPEG payload: %v", err)
	}
}

// FuzzReceiver feeds arbitrary datagrams to a receiver: nothing may panic,
// and whatever comes out must be a JPEG the standard library can read the
// header of.
func FuzzReceiver(f *testing.F) {
	for _, fr := range packets(f, 1, 3) {
		for _, p := range fr {
			b, _ := p.Marshal()
			f.Add(b)
		}
	}
	f.Add([]byte{0x80, 26, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 64, 40, 30})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReceiver(1, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// Treat the input as several datagrams separated by 0xff 0x00.
		for _, d := range bytes.Split(data, []byte{0xff, 0x00}) {
			if IsRTCP(d) {
				ByeSSRCs(d)
				continue
			}
			var p rtp.Packet
			if p.Unmarshal(d) != nil {
				continue
			}
			p.SSRC = 1
			fs, _ := r.Push(&p, time.Now())
			for _, fr := range fs {
				if len(fr.JPEG) < 2 || fr.JPEG[0] != 0xff || fr.JPEG[1] != 0xd8 {
					t.Fatalf("a frame without SOI: %x", fr.JPEG[:min(8, len(fr.JPEG))])
				}
			}
		}
		r.Stats()
	})
}

// byes makes an RTCP compound packet: a receiver report, then BYE packets
// naming n sources in all (at most 31 each), from 1 up.
func byes(n int) []byte {
	pkts := []rtcp.Packet{&rtcp.ReceiverReport{SSRC: 1}}
	for next := uint32(1); n > 0; {
		g := &rtcp.Goodbye{}
		for range min(n, 31) {
			g.Sources = append(g.Sources, next)
			next++
			n--
		}
		pkts = append(pkts, g)
	}
	b, err := rtcp.Marshal(pkts)
	if err != nil {
		panic(err)
	}
	return b
}

func TestRTCPHelpers(t *testing.T) {
	b, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 1}, &rtcp.Goodbye{Sources: []uint32{9, 10}}})
	if !IsRTCP(b) || IsRTCP([]byte{0x80, 26, 0, 0}) {
		t.Error("IsRTCP")
	}
	for _, c := range []struct {
		name string
		b    []byte
		want int
		err  error
	}{
		{"a camera's goodbye names its source", b, 2, nil},
		{"one full BYE packet is accepted", byes(31), 31, nil},
		{"32 sources in two BYE packets are refused", byes(32), 0, ErrTooManyByes},
		{"10,000 sources are refused", byes(10000), 0, ErrTooManyByes},
		{"a datagram that is not RTCP names none", []byte("hello, agent"), 0, nil},
		{"a truncated BYE names none", b[:len(b)-2], 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ByeSSRCs(c.b)
			if len(got) != c.want || err != c.err {
				t.Errorf("ByeSSRCs = %d sources, %v; want %d, %v", len(got), err, c.want, c.err)
			}
		})
	}
}

// FuzzByeSSRCs: nothing may panic, no answer names more than MaxByeSSRCs
// sources, and what is accepted is what the RTCP parser finds.
func FuzzByeSSRCs(f *testing.F) {
	f.Add(byes(1))
	f.Add(byes(31))
	f.Add(byes(32))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ByeSSRCs(b)
		if len(got) > MaxByeSSRCs {
			t.Fatalf("%d sources accepted", len(got))
		}
		if err != nil {
			return
		}
		pkts, perr := rtcp.Unmarshal(b)
		var want []uint32
		for _, p := range pkts {
			if g, ok := p.(*rtcp.Goodbye); ok && perr == nil {
				want = append(want, g.Sources...)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ByeSSRCs = %v, the parser finds %v", got, want)
		}
	})
}

// writeTestSegment writes n frames at 15 fps and returns the path.
func writeTestSegment(t *testing.T, dir string, n int) string {
	p := filepath.Join(dir, "seg.mp4")
	w, err := CreateSegment(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.Write(Frame{JPEG: testJPEG(t, i), RTP: uint32(1e9) + uint32(i*ClockRate/15)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSegmentsRoundTripAndSurviveTruncation(t *testing.T) {
	dir := t.TempDir()
	p := writeTestSegment(t, dir, 45) // 3 s
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("segment mode %v, %v; want 0600 (clips are private)", fi.Mode().Perm(), err)
	}
	seg, err := ReadSegment(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(seg.Samples) != 45 || seg.Width != 320 || seg.Height != 240 || seg.Truncated {
		t.Fatalf("segment: %d samples %dx%d truncated=%v", len(seg.Samples), seg.Width, seg.Height, seg.Truncated)
	}
	if d := seg.Duration(); d != 3*time.Second {
		t.Errorf("duration %v, want 3s", d)
	}
	full, _ := os.ReadFile(p)
	prev := -1
	for cut := len(full) - 1; cut > len(full)/3; cut -= len(full) / 17 {
		os.WriteFile(p, full[:cut], 0o644)
		s, err := ReadSegment(p)
		if err != nil {
			t.Fatalf("cut at %d of %d: %v", cut, len(full), err)
		}
		if !s.Truncated || len(s.Samples) >= 45 || (prev >= 0 && len(s.Samples) > prev) {
			t.Fatalf("cut at %d: %d samples, truncated=%v", cut, len(s.Samples), s.Truncated)
		}
		prev = len(s.Samples)
	}
}

func TestFinishWithAndWithoutFFmpeg(t *testing.T) {
	dir := t.TempDir()
	seg := writeTestSegment(t, dir, 60) // 4 s
	for _, withFFmpeg := range []bool{false, true} {
		name := map[bool]string{false: "mjpeg", true: "h264"}[withFFmpeg]
		t.Run(name, func(t *testing.T) {
			f := NewFinisher()
			if !withFFmpeg {
				f.FFmpeg = ""
			} else {
				f.FFmpeg = testpeer.Need(t, "ffmpeg")
			}
			out, thumb := filepath.Join(dir, name+".mp4"), filepath.Join(dir, name+".jpg")
			info, err := f.Finish(context.Background(), []string{seg}, out, thumb)
			if err != nil {
				t.Fatal(err)
			}
			if info.Frames != 60 || info.Codec != name || info.Duration != 4*time.Second {
				t.Errorf("info %+v", info)
			}
			if _, err := jpeg.DecodeConfig(bytes.NewReader(must(os.ReadFile(thumb)))); err != nil {
				t.Errorf("thumbnail: %v", err)
			}
			for _, p := range []string{out, thumb} {
				if fi := must(os.Stat(p)); fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600 (clips are private)", filepath.Base(p), fi.Mode().Perm())
				}
			}
			codec, dur := ffprobe(t, out)
			if codec != name || dur < 3.6 || dur > 4.4 {
				t.Errorf("ffprobe: codec %s, duration %.2fs; want %s, 4s", codec, dur, name)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// ffprobe returns a file's video codec and duration in seconds.
func ffprobe(t *testing.T, path string) (string, float64) {
	t.Helper()
	bin := testpeer.Need(t, "ffprobe")
	out, err := exec.Command(bin, "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var r struct {
		Streams []struct {
			Codec string `json:"codec_name"`
		}
		Format struct {
			Duration string
		}
	}
	json.Unmarshal(out, &r)
	d, _ := strconv.ParseFloat(r.Format.Duration, 64)
	if len(r.Streams) == 0 {
		t.Fatalf("ffprobe found no stream in %s: %s", path, out)
	}
	return r.Streams[0].Codec, d
}

func TestSenderToReceiverOverLoopback(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadBuffer(4 << 20)
	port := conn.LocalAddr().(*net.UDPAddr).Port
	s, err := NewSender("127.0.0.1", port, 99, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 10 {
		if err := s.Send(testJPEG(t, i), start.Add(time.Duration(i)*time.Second/15)); err != nil {
			t.Fatal(err)
		}
	}
	s.Bye("done")
	r, _ := NewReceiver(99, nil)
	defer r.Close()
	buf := make([]byte, 2048)
	var frames int
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for n := uint64(0); n < s.Packets; n++ {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d packets: %v", n, err)
		}
		if k > 1200+12+8+128 {
			t.Errorf("datagram of %d bytes", k)
		}
		var p rtp.Packet
		if err := p.Unmarshal(buf[:k]); err != nil {
			t.Fatal(err)
		}
		fs, _ := r.Push(&p, time.Now())
		frames += len(fs)
	}
	if frames < 9 {
		t.Errorf("%d frames arrived of 10", frames)
	}
	_ = color.White
}

// writeFrames writes a segment of frames first..last-1 of a 15 fps
// timeline that starts near the wrap of the RTP clock.
func writeFrames(t *testing.T, p string, first, last int) {
	t.Helper()
	w, err := CreateSegment(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i < last; i++ {
		if err := w.Write(Frame{JPEG: testJPEG(t, i), RTP: uint32(1<<32-ClockRate) + uint32(i*ClockRate/15)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// A stream that moved between agents leaves segments on one timeline:
// the moments two of them hold are in the clip once, and a moment none
// holds keeps the clip's length (the last frame before it stays on).
func TestSegmentsOfAMovedStreamAreJoinedOnTheirTimeline(t *testing.T) {
	for _, tc := range []struct {
		name           string
		a, b           [2]int
		frames         int
		duration       time.Duration
		frameAtTheJoin int // the frame after a's last
	}{
		{"overlap", [2]int{0, 40}, [2]int{25, 60}, 60, 4 * time.Second, 40},
		{"gap", [2]int{0, 20}, [2]int{30, 60}, 50, 4 * time.Second, 30},
		{"end to end", [2]int{0, 30}, [2]int{30, 60}, 60, 4 * time.Second, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "seg-01-a.mp4"), filepath.Join(dir, "seg-02-b.mp4")
			writeFrames(t, a, tc.a[0], tc.a[1])
			writeFrames(t, b, tc.b[0], tc.b[1])
			f := NewFinisher()
			f.FFmpeg = ""
			out := filepath.Join(dir, "clip.mp4")
			info, err := f.Finish(context.Background(), []string{a, b}, out, "")
			if err != nil {
				t.Fatal(err)
			}
			// The last frame lasts the writer's guess at a frame (1/15 s).
			if info.Frames != tc.frames || info.Duration != tc.duration {
				t.Errorf("%d frames of %v, want %d of %v", info.Frames, info.Duration, tc.frames, tc.duration)
			}
			// The clip's frames are the timeline's, each once, in order.
			seg := readMP4Frames(t, out)
			want := []int{}
			for i := tc.a[0]; i < tc.a[1]; i++ {
				want = append(want, i)
			}
			for i := max(tc.b[0], tc.a[1]); i < tc.b[1]; i++ {
				want = append(want, i)
			}
			if len(seg) != len(want) {
				t.Fatalf("clip has %d frames, want %d", len(seg), len(want))
			}
			for i, j := range want {
				if !bytes.Equal(seg[i], testJPEG(t, j)) {
					t.Fatalf("clip frame %d is not timeline frame %d", i, j)
				}
			}
			if !bytes.Equal(seg[tc.a[1]-tc.a[0]], testJPEG(t, tc.frameAtTheJoin)) {
				t.Errorf("the frame after the join is not frame %d", tc.frameAtTheJoin)
			}
		})
	}
}

// readMP4Frames reads the JPEG frames of a progressive M-JPEG MP4.
func readMP4Frames(t *testing.T, p string) [][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pres pmp4.Presentation
	if err := pres.Unmarshal(f); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, s := range pres.Tracks[0].Samples {
		b, err := s.GetPayload()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}
