package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/jpeg"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format/rtpmjpeg"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

type noUsers struct{}

func (noUsers) Authenticate(context.Context, string, string) (*users.User, error) {
	return nil, errors.New("no users")
}

// harness is a broker, an agent and the agent's messages.
type harness struct {
	b       *broker.Server
	a       *Agent
	storage string

	mu       sync.Mutex
	segments []ingest.SegmentReport
	states   []string
	beats    []ingest.Heartbeat
}

func start(t *testing.T, capacity int) *harness {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := broker.Open(broker.Config{MQTT: c, DataDir: t.TempDir()}, noUsers{}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	h := &harness{b: b, storage: t.TempDir()}
	b.Subscribe("vigil/agents/+/+", func(topic string, payload []byte, _ string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		switch {
		case len(topic) > 8 && topic[len(topic)-8:] == "/segment":
			var r ingest.SegmentReport
			json.Unmarshal(payload, &r)
			h.segments = append(h.segments, r)
		case len(topic) > 6 && topic[len(topic)-6:] == "/state":
			h.states = append(h.states, string(payload))
		case len(topic) > 10 && topic[len(topic)-10:] == "/heartbeat":
			var hb ingest.Heartbeat
			json.Unmarshal(payload, &hb)
			h.beats = append(h.beats, hb)
		}
	})
	// The agent logs in as the coordinator would have it: its own
	// credential and client id.
	b.AddCredential("agent-a1", "agent-password", &users.User{Name: "agent-a1", Role: users.RoleDevice,
		Publish: []string{"vigil/agents/a1/#"}, Subscribe: []string{"vigil/agents/a1/cmd"}}, ingest.AgentClientID("a1"))
	a, err := Open(context.Background(), Config{ID: "a1", Brokers: []string{b.URL(broker.TCP)}, Username: "agent-a1", Password: "agent-password",
		Listen: "127.0.0.1", Storage: h.storage, Capacity: capacity, Idle: time.Second, Heartbeat: 100 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	h.a = a
	return h
}

func (h *harness) expect(t *testing.T, id string, ssrc uint32, source string) {
	t.Helper()
	b, _ := json.Marshal(ingest.AgentCommand{Action: "expect", StreamID: id, SSRC: ssrc, Source: source, Dir: "lab/" + id, Segment: "seg-1.mp4", Duration: 30})
	if err := h.b.Publish(ingest.AgentTopic("a1", "cmd"), b, false, 1); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the agent to take stream "+id, func() bool {
		h.a.mu.Lock()
		defer h.a.mu.Unlock()
		return h.a.byID[id] != nil
	})
}

func (h *harness) segment(t *testing.T, id string) ingest.SegmentReport {
	t.Helper()
	var r ingest.SegmentReport
	testkit.WaitFor(t, 10*time.Second, "the segment report of "+id, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, s := range h.segments {
			if s.StreamID == id && s.State == "done" {
				r = s
				return true
			}
		}
		return false
	})
	return r
}

func frameJPEG(i int) []byte {
	img := image.NewYCbCr(image.Rect(0, 0, 160, 120), image.YCbCrSubsampleRatio420)
	for p := range img.Y {
		img.Y[p] = uint8(p + i*13)
	}
	var b bytes.Buffer
	jpeg.Encode(&b, img, &jpeg.Options{Quality: 60})
	return b.Bytes()
}

// rtpFrames encodes n frames at 15 fps.
func rtpFrames(t *testing.T, ssrc uint32, n int) [][]*rtp.Packet {
	enc := &rtpmjpeg.Encoder{SSRC: &ssrc, PayloadMaxSize: 500}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	var out [][]*rtp.Packet
	for i := range n {
		pkts, err := enc.Encode(frameJPEG(i))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			p.Timestamp = uint32(i * media.ClockRate / 15)
		}
		out = append(out, pkts)
	}
	return out
}

func sendTo(t *testing.T, addr string, pkts ...*rtp.Packet) *net.UDPConn {
	t.Helper()
	ua, _ := net.ResolveUDPAddr("udp", addr)
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		b, _ := p.Marshal()
		c.Write(b)
	}
	return c
}

func TestAStreamIsStoredAndReportedAndStatesFollowCapacity(t *testing.T) {
	h := start(t, 2)
	h.expect(t, "s1", 1111, "127.0.0.1")
	h.expect(t, "s2", 2222, "")
	frames := rtpFrames(t, 1111, 45)
	c := sendTo(t, h.a.Addr())
	defer c.Close()
	for _, f := range frames {
		for _, p := range f {
			b, _ := p.Marshal()
			c.Write(b)
		}
		time.Sleep(2 * time.Millisecond) // pacing, not synchronisation: a camera sends frame by frame; a burst could overflow the socket buffer
	}
	// BYE on the RTCP port ends s1.
	port, _ := strconv.Atoi(h.a.Addr()[len("127.0.0.1:"):])
	s, err := media.NewSender("127.0.0.1", port, 1111, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Bye("done")
	r := h.segment(t, "s1")
	if r.Reason != ingest.EndBye || r.Frames < 44 || r.Lost != 0 || r.DurationMS < 2900 || r.DurationMS > 3100 {
		t.Fatalf("report %+v", r)
	}
	seg, err := media.ReadSegment(filepath.Join(h.storage, "lab/s1/seg-1.mp4"))
	if err != nil || len(seg.Samples) != r.Frames || seg.Width != 160 {
		t.Fatalf("segment on disk: %v, %+v", err, seg)
	}
	// s2 never gets a packet: it ends as idle.
	if r := h.segment(t, "s2"); r.Reason != ingest.EndIdle || r.Frames != 0 {
		t.Errorf("idle stream report %+v", r)
	}
	testkit.WaitFor(t, 10*time.Second, "the states empty, busy, full, busy, empty", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		want := []string{"empty", "busy", "full", "busy", "empty"}
		if len(h.states) < len(want) {
			return false
		}
		got := h.states[len(h.states)-len(want):]
		for i := range want {
			if got[i] != want[i] {
				return false
			}
		}
		return true
	})
}

func TestBadInputIsCountedAndNeverCorruptsAStream(t *testing.T) {
	h := start(t, 3)
	h.expect(t, "good", 5555, "")
	good := rtpFrames(t, 5555, 30)
	camera := sendTo(t, h.a.Addr())
	defer camera.Close()
	intruder := sendTo(t, h.a.Addr())
	defer intruder.Close()
	garbage := [][]byte{[]byte("hello"), {0x80}, make([]byte, 1500), {0x40, 26, 0, 1, 0, 0, 0, 0, 0, 0, 0x15, 0xb3}}
	for i, f := range good {
		for j, p := range f {
			b, _ := p.Marshal()
			camera.Write(b)
			if j == 0 {
				camera.Write(b) // duplicated
			}
		}
		// A stranger sends the same SSRC from another port, another SSRC,
		// random datagrams, and a fragment that belongs to no frame.
		forged := *f[0]
		forged.Payload = []byte{0, 0, 0, 0, 1, 99, 20, 15}
		bf, _ := forged.Marshal()
		intruder.Write(bf)
		other := *f[0]
		other.SSRC = 777
		bo, _ := other.Marshal()
		camera.Write(bo)
		camera.Write(garbage[i%len(garbage)])
		time.Sleep(2 * time.Millisecond) // pacing, not synchronisation: a camera sends frame by frame; a burst could overflow the socket buffer
	}
	// The intruder's last datagram came after the good stream's last: once
	// all 30 are counted, every good frame was read before the stop.
	testkit.WaitFor(t, 10*time.Second, "the agent to read what was sent", func() bool {
		return h.a.wrongSource.Load() == 30 && h.a.unknownSSRC.Load() >= 30 && h.a.notRTP.Load() >= 20
	})
	b, _ := json.Marshal(ingest.AgentCommand{Action: "stop", StreamID: "good"})
	h.b.Publish(ingest.AgentTopic("a1", "cmd"), b, false, 1)
	r := h.segment(t, "good")
	if r.Frames < 29 || r.BadFrames != 0 || r.WrongSource != 30 || r.Reason != ingest.EndQuit {
		t.Fatalf("the good stream was disturbed: %+v", r)
	}
	testkit.WaitFor(t, 10*time.Second, "a heartbeat with the drops", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.beats) == 0 {
			return false
		}
		hb := h.beats[len(h.beats)-1]
		return hb.UnknownSSRC >= 30 && hb.WrongSource == 30 && hb.NotRTP >= 20
	})
}

func TestExpectRefusesPathsOutsideTheStorage(t *testing.T) {
	h := start(t, 1)
	for _, dir := range []string{"../etc", "/tmp/x", ""} {
		err := h.a.expect(ingest.AgentCommand{StreamID: "x", SSRC: 1, Dir: dir, Segment: "s.mp4"})
		if err == nil {
			t.Errorf("dir %q accepted", dir)
		}
	}
	if err := h.a.expect(ingest.AgentCommand{StreamID: "x", SSRC: 1, Dir: "ok", Segment: "../s.mp4"}); err == nil {
		t.Error("segment with a path accepted")
	}
}

// A live-only stream stores nothing; its frames reach a viewer holding the
// live token as multipart JPEG, and nobody without the token can watch.
func TestLiveOnlyStreamIsWatchedNotStored(t *testing.T) {
	h := start(t, 3)
	b, _ := json.Marshal(ingest.AgentCommand{Action: "expect", StreamID: "live1", SSRC: 4242, LiveOnly: true, LiveToken: "s3cret", Duration: 30})
	if err := h.b.Publish(ingest.AgentTopic("a1", "cmd"), b, false, 1); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the live stream", func() bool {
		h.a.mu.Lock()
		defer h.a.mu.Unlock()
		return h.a.byID["live1"] != nil
	})
	var httpAddr string
	testkit.WaitFor(t, 10*time.Second, "a heartbeat with the live view address", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, hb := range h.beats {
			httpAddr = hb.HTTPAddr
		}
		return httpAddr != ""
	})
	for _, tok := range []string{"", "wrong", "s3cret0"} {
		resp, err := http.Get("http://" + httpAddr + "/live/live1?token=" + tok)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("token %q: status %d, want 404", tok, resp.StatusCode)
		}
	}
	resp, err := http.Get("http://" + httpAddr + "/live/live1?token=s3cret")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 200 || mt != "multipart/x-mixed-replace" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	frames := rtpFrames(t, 4242, 20)
	c := sendTo(t, h.a.Addr())
	defer c.Close()
	got := make(chan []byte, 100)
	go func() {
		mr := multipart.NewReader(resp.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				close(got)
				return
			}
			b, _ := io.ReadAll(p)
			got <- b
		}
	}()
	for i, f := range frames {
		for _, p := range f {
			b, _ := p.Marshal()
			c.Write(b)
		}
		// The viewer gets each frame whole as soon as its last packet is in,
		// not when the next frame starts.
		select {
		case b := <-got:
			if !samePicture(t, b, frameJPEG(i)) {
				t.Fatalf("frame %d: the viewer got another picture", i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("frame %d never reached the viewer", i)
		}
	}
	port, _ := strconv.Atoi(h.a.Addr()[len("127.0.0.1:"):])
	s, err := media.NewSender("127.0.0.1", port, 4242, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Bye("done")
	r := h.segment(t, "live1")
	if r.Reason != ingest.EndBye || r.Frames != 20 || r.Segment != "" {
		t.Errorf("live stream report %+v", r)
	}
	// The viewer's response ends with the stream.
	for range got {
	}
	if entries, _ := os.ReadDir(h.storage); len(entries) != 0 {
		t.Errorf("a live-only stream stored %d entries", len(entries))
	}
}

// samePicture tells whether two JPEGs decode to the same picture (RTP/JPEG
// rebuilds the headers, so the bytes differ).
func samePicture(t *testing.T, a, b []byte) bool {
	t.Helper()
	ia, err := jpeg.Decode(bytes.NewReader(a))
	if err != nil {
		t.Fatalf("the viewer got a bad JPEG: %v", err)
	}
	ib, _ := jpeg.Decode(bytes.NewReader(b))
	ya, yb := ia.(*image.YCbCr), ib.(*image.YCbCr)
	if ya.Rect != yb.Rect {
		return false
	}
	var diff int
	for i := range ya.Y {
		d := int(ya.Y[i]) - int(yb.Y[i])
		diff += max(d, -d)
	}
	return diff/len(ya.Y) < 2
}

// sendFrom returns a UDP socket on ip (any port) connected to addr.
func sendFrom(t *testing.T, ip, addr string) *net.UDPConn {
	t.Helper()
	ua, _ := net.ResolveUDPAddr("udp", addr)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(c *net.UDPConn, pkts ...*rtp.Packet) {
	for _, p := range pkts {
		b, _ := p.Marshal()
		c.Write(b)
	}
}

// frames is how many frames stream id has reassembled so far.
func (h *harness) frames(id string) uint64 {
	h.a.mu.Lock()
	s := h.a.byID[id]
	h.a.mu.Unlock()
	if s == nil {
		return 0
	}
	return s.rx.Load().Stats().Frames
}

func (h *harness) stop(t *testing.T, id string) ingest.SegmentReport {
	t.Helper()
	b, _ := json.Marshal(ingest.AgentCommand{Action: "stop", StreamID: id})
	if err := h.b.Publish(ingest.AgentTopic("a1", "cmd"), b, false, 1); err != nil {
		t.Fatal(err)
	}
	return h.segment(t, id)
}

// bye makes an RTCP BYE datagram naming ssrcs (31 per BYE packet).
func bye(ssrcs ...uint32) []byte {
	var pkts []rtcp.Packet
	for len(ssrcs) > 0 {
		n := min(len(ssrcs), 31)
		pkts = append(pkts, &rtcp.Goodbye{Sources: ssrcs[:n]})
		ssrcs = ssrcs[n:]
	}
	b, _ := rtcp.Marshal(pkts)
	return b
}

// TestAByeEndsAStreamOnlyFromItsSource: an RTCP BYE ends a stream when it
// comes from the stream's source, and never when it names thousands of
// streams at once. The BYEs go to the RTP port (multiplexed RTCP), so that
// the camera's frames sent after them are handled after them.
func TestAByeEndsAStreamOnlyFromItsSource(t *testing.T) {
	all := make([]uint32, 10000)
	for i := range all {
		all[i] = uint32(i + 1)
	}
	for _, c := range []struct {
		name         string
		source       string // the camera's IP as the coordinator gives it
		framesBefore int    // the camera's frames before the BYE
		from         string // where the BYE comes from: "camera" (its own socket) or an IP
		bye          []byte
		ends         bool
		wrong        uint64 // wrong_source in the report
		refused      uint64 // bye_refused in the heartbeat
	}{
		{name: "the camera's BYE ends its stream", framesBefore: 10, from: "camera", bye: bye(5000), ends: true},
		{name: "a BYE from a third address does not end a recording", framesBefore: 10, from: "127.0.0.2", bye: bye(5000), wrong: 1},
		{name: "a BYE from a third address does not end a recording whose camera is known", source: "127.0.0.1", framesBefore: 10, from: "127.0.0.2", bye: bye(5000), wrong: 1},
		{name: "a BYE before the camera sent anything ends nothing", from: "127.0.0.1", bye: bye(5000), wrong: 1},
		{name: "a BYE naming 10,000 sources ends nothing, though it comes from the camera", framesBefore: 10, from: "camera", bye: bye(all...), refused: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := start(t, 1)
			h.expect(t, "s", 5000, c.source)
			frames := rtpFrames(t, 5000, 20)
			camera := sendFrom(t, "127.0.0.1", h.a.Addr())
			for _, f := range frames[:c.framesBefore] {
				write(camera, f...)
			}
			testkit.WaitFor(t, 10*time.Second, "the frames before the BYE", func() bool { return h.frames("s") == uint64(c.framesBefore) })
			from := camera
			if c.from != "camera" {
				from = sendFrom(t, c.from, h.a.Addr())
			}
			from.Write(c.bye)
			if c.ends {
				if r := h.segment(t, "s"); r.Reason != ingest.EndBye || r.Frames != c.framesBefore {
					t.Errorf("report %+v, want ended by BYE after %d frames", r, c.framesBefore)
				}
				return
			}
			for _, f := range frames[c.framesBefore:] {
				write(camera, f...)
			}
			testkit.WaitFor(t, 10*time.Second, "every frame", func() bool { return h.frames("s") == 20 })
			testkit.WaitFor(t, 10*time.Second, "a heartbeat that counts the refused BYE", func() bool {
				h.mu.Lock()
				defer h.mu.Unlock()
				return len(h.beats) > 0 && h.beats[len(h.beats)-1].ByeRefused == c.refused && h.beats[len(h.beats)-1].WrongSource == c.wrong
			})
			if r := h.stop(t, "s"); r.Reason != ingest.EndQuit || r.Frames != 20 || r.BadFrames != 0 || r.WrongSource != c.wrong {
				t.Errorf("report %+v, want 20 frames ended by quit, %d wrong source", r, c.wrong)
			}
		})
	}
}

// junk is what a racer sends with a stream's SSRC: random payloads, frames
// of garbage behind a valid RTP/JPEG header, and another payload type.
func junk(ssrc uint32, n int) []*rtp.Packet {
	r := mrand.New(mrand.NewPCG(uint64(ssrc), 7))
	var out []*rtp.Packet
	for i := range n {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 26, SequenceNumber: uint16(r.IntN(65536)), Timestamp: r.Uint32(), SSRC: ssrc, Marker: true}}
		data := make([]byte, 100+r.IntN(400))
		for j := range data {
			data[j] = byte(r.IntN(256))
		}
		switch i % 3 {
		case 0:
			p.Payload, p.Marker = data, r.IntN(2) == 0
		case 1:
			p.Payload = append([]byte{0, 0, 0, 0, 1, 99, 20, 15}, data...) // 160x120, offset 0
		case 2:
			p.PayloadType, p.Payload = 96, data
		}
		out = append(out, p)
	}
	return out
}

// TestARacerDoesNotCaptureAStream: junk sent with the stream's SSRC before
// the camera's first frame, and between its frames, from another host (or,
// when the camera's IP is known, from that IP), does not keep the camera's
// frames out: the segment holds the camera's pictures, and every junk
// packet is counted. (When the camera's IP is not known, a host has one
// trial at a time: a racer on the camera's own host can hold it.)
func TestARacerDoesNotCaptureAStream(t *testing.T) {
	for _, c := range []struct{ name, source, racer string }{
		{"when the camera's address is not known", "", "127.0.0.2"},
		{"when only the camera's IP is known", "127.0.0.1", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := start(t, 1)
			h.expect(t, "s", 6000, c.source)
			camera := sendFrom(t, "127.0.0.1", h.a.Addr())
			racer := sendFrom(t, c.racer, h.a.Addr())
			bad := junk(6000, 40)
			write(racer, bad[:10]...)
			for i, f := range rtpFrames(t, 6000, 30) {
				write(camera, f...)
				write(racer, bad[10+i])
			}
			testkit.WaitFor(t, 10*time.Second, "the camera's 30 frames", func() bool { return h.frames("s") == 30 })
			r := h.stop(t, "s")
			if r.Frames != 30 || r.BadFrames != 0 || r.WrongSource != 40 {
				t.Errorf("report %+v, want the camera's 30 frames, none bad, 40 from the wrong source", r)
			}
			seg, err := media.ReadSegment(filepath.Join(h.storage, "lab/s/seg-1.mp4"))
			if err != nil || len(seg.Samples) != 30 {
				t.Fatalf("segment: %v, %d frames", err, len(seg.Samples))
			}
			for i, s := range seg.Samples {
				if !samePicture(t, s.JPEG, frameJPEG(i)) {
					t.Errorf("frame %d is not the camera's", i)
				}
			}
		})
	}
}

// TestSourceTrialsAreBounded: while junk senders on four hosts hold every
// trial, another host is refused, and so is another port of a host that
// holds one; once their window has passed, the camera gets a trial and its
// first whole frame latches it.
func TestSourceTrialsAreBounded(t *testing.T) {
	h := start(t, 1)
	h.expect(t, "s", 7000, "")
	h.a.mu.Lock()
	s := h.a.byID["s"]
	h.a.mu.Unlock()
	t0 := time.Now()
	bad := junk(7000, maxTrials+1)
	for i := range maxTrials {
		s.receive(bad[i], &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+i)), Port: 1000}, t0)
	}
	s.receive(bad[maxTrials], &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1001}, t0)
	camera := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2000}
	frames := rtpFrames(t, 7000, 2)
	for _, p := range frames[0] {
		s.receive(p, camera, t0.Add(time.Second))
	}
	state := func() (latched netip.AddrPort, trials int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.latched, len(s.trials)
	}
	if latched, trials := state(); latched.IsValid() || trials != maxTrials || s.wrongSource.Load() != uint64(len(frames[0])+1) {
		t.Fatalf("with every trial taken: latched %v, %d trials, %d refused; want none latched, %d trials, %d refused",
			latched, trials, s.wrongSource.Load(), maxTrials, len(frames[0])+1)
	}
	for _, p := range frames[1] {
		s.receive(p, camera, t0.Add(trialWindow+time.Millisecond))
	}
	if latched, trials := state(); latched != netip.MustParseAddrPort("127.0.0.1:2000") || s.rx.Load().Stats().Frames != 1 || trials != 0 {
		t.Fatalf("after the window: latched %v, %d frames, %d trials; want the camera, 1 frame, no trials", latched, s.rx.Load().Stats().Frames, trials)
	}
	if got, want := s.wrongSource.Load(), uint64(len(frames[0])+1+maxTrials); got != want {
		t.Errorf("%d refused, want %d (the camera's first frame and each junk sender's packet)", got, want)
	}
}

// badFrames is what a junk sender sends: n whole frames, one packet each,
// whose RTP/JPEG header is right and whose picture is garbage.
func badFrames(ssrc uint32, seed uint64, n int) []*rtp.Packet {
	r := mrand.New(mrand.NewPCG(seed, 11))
	var out []*rtp.Packet
	for i := range n {
		data := make([]byte, 200+r.IntN(300))
		for j := range data {
			data[j] = byte(r.IntN(256))
		}
		out = append(out, &rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 26, SequenceNumber: uint16(i), Timestamp: uint32(i * 6000), SSRC: ssrc, Marker: true},
			Payload: append([]byte{0, 0, 0, 0, 1, 99, 20, 15}, data...), // 160x120, offset 0
		})
	}
	return out
}

// sync waits until the agent has handled every datagram sent to it so far:
// it reads them in order, and counts the last one, of an SSRC nobody
// expects.
func (h *harness) sync(t *testing.T) {
	t.Helper()
	before := h.a.unknownSSRC.Load()
	c := sendFrom(t, "127.0.0.1", h.a.Addr())
	write(c, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 26, SSRC: 1}, Payload: []byte{0}})
	testkit.WaitFor(t, 10*time.Second, "the agent to read every datagram", func() bool { return h.a.unknownSSRC.Load() > before })
}

// TestJunkSendersDoNotHoldTheCameraOut: senders that know the stream's
// SSRC and send it junk from several ports and hosts, starting before the
// camera and going on between its frames, use up their trials; the camera
// still gets one, and its recording starts with its first frame.
func TestJunkSendersDoNotHoldTheCameraOut(t *testing.T) {
	for _, c := range []struct {
		name   string
		source string   // the camera's IP as the coordinator gives it
		junk   []string // the junk senders' IPs, one port each
	}{
		{name: "when the camera's IP is known, from four of its ports and from other hosts", source: "127.0.0.1",
			junk: []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.3"}},
		{name: "when it is not known, from four hosts, one of them on four ports",
			junk: []string{"127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const n = 30
			h := start(t, 1)
			h.expect(t, "s", 8000, c.source)
			var senders []*net.UDPConn
			var bad [][]*rtp.Packet
			for i, ip := range c.junk {
				senders = append(senders, sendFrom(t, ip, h.a.Addr()))
				bad = append(bad, badFrames(8000, uint64(i), trialFrames+n))
			}
			for i, j := range senders {
				write(j, bad[i][:trialFrames]...)
			}
			camera := sendFrom(t, "127.0.0.1", h.a.Addr())
			for i, f := range rtpFrames(t, 8000, n) {
				write(camera, f...)
				for k, j := range senders {
					write(j, bad[k][trialFrames+i])
				}
			}
			h.sync(t)
			r := h.stop(t, "s")
			if want := uint64(len(c.junk) * (trialFrames + n)); r.Frames != n || r.BadFrames != 0 || r.WrongSource != want {
				t.Fatalf("report: %d frames, %d bad, %d from the wrong source; want the camera's %d frames, none bad, every junk packet (%d) refused",
					r.Frames, r.BadFrames, r.WrongSource, n, want)
			}
			seg, err := media.ReadSegment(filepath.Join(h.storage, "lab/s/seg-1.mp4"))
			if err != nil || len(seg.Samples) != n {
				t.Fatalf("segment: %v, %d frames", err, len(seg.Samples))
			}
			for i, s := range seg.Samples {
				if !samePicture(t, s.JPEG, frameJPEG(i)) {
					t.Errorf("frame %d is not the camera's", i)
				}
			}
		})
	}
}

// TestSpentTrialsAreRememberedWithinABound: a sender that used up its
// trial stays refused, but no more than maxSpent of them are remembered,
// however many ports send junk; the camera still latches after them.
func TestSpentTrialsAreRememberedWithinABound(t *testing.T) {
	h := start(t, 1)
	h.expect(t, "s", 9000, "127.0.0.1")
	h.a.mu.Lock()
	s := h.a.byID["s"]
	h.a.mu.Unlock()
	now := time.Now()
	for port := range 3 * maxSpent {
		from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1000 + port}
		for _, p := range badFrames(9000, uint64(port), trialFrames+1) {
			s.receive(p, from, now)
		}
	}
	s.mu.Lock()
	trials := len(s.trials)
	s.mu.Unlock()
	if trials != maxSpent || s.wrongSource.Load() != 3*maxSpent*(trialFrames+1) {
		t.Fatalf("%d trials remembered, %d packets refused; want %d, %d", trials, s.wrongSource.Load(), maxSpent, 3*maxSpent*(trialFrames+1))
	}
	for _, p := range rtpFrames(t, 9000, 1)[0] {
		s.receive(p, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 999}, now)
	}
	if got := s.rx.Load().Stats().Frames; got != 1 {
		t.Errorf("the camera's first frame: %d frames, want 1", got)
	}
}
