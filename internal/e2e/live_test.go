package e2e_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/httpapi"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/testkit"
)

// grayFrame is a flat picture whose brightness names frame i (0..39).
func grayFrame(i int) []byte {
	img := image.NewYCbCr(image.Rect(0, 0, 160, 120), image.YCbCrSubsampleRatio420) // what RTP/JPEG carries
	for p := range img.Y {
		img.Y[p] = uint8(20 + (i%40)*5)
	}
	for p := range img.Cb {
		img.Cb[p], img.Cr[p] = 128, 128
	}
	var b bytes.Buffer
	jpeg.Encode(&b, img, &jpeg.Options{Quality: 90})
	return b.Bytes()
}

// frameIndex reads back grayFrame's number.
func frameIndex(b []byte) (int, bool) {
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		return 0, false
	}
	yc, ok := img.(*image.YCbCr)
	if !ok {
		return 0, false
	}
	v := int(yc.Y[yc.YOffset(80, 60)])
	return (v - 20 + 2) / 5, true
}

// liveSession is a viewer's MJPEG response and what it has shown.
type liveSession struct {
	resp *http.Response
	mu   sync.Mutex
	got  []liveFrame
	done chan struct{}
}

type liveFrame struct {
	index int
	at    time.Time
}

// openLive asks for a camera's live view and opens its MJPEG relay as a
// browser would: the POST, then at once the GET.
func openLive(t testing.TB, ta *testApp, site, cam, user, password string) (httpapi.LiveView, *liveSession) {
	t.Helper()
	base := "http://" + ta.HTTP.Addr().String()
	req, _ := http.NewRequest("POST", base+"/api/v1/cameras/"+site+"/"+cam+"/live", nil)
	req.SetBasicAuth(user, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST live: %d %s", resp.StatusCode, body)
	}
	var lv httpapi.LiveView
	must(t, json.Unmarshal(body, &lv))
	req, _ = http.NewRequest("GET", base+lv.MJPEG, nil)
	req.SetBasicAuth(user, password)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 200 || mt != "multipart/x-mixed-replace" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %d %q %s", lv.MJPEG, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	ls := &liveSession{resp: resp, done: make(chan struct{})}
	go func() {
		defer close(ls.done)
		mr := multipart.NewReader(resp.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(p)
			now := time.Now()
			if i, ok := frameIndex(b); ok {
				ls.mu.Lock()
				ls.got = append(ls.got, liveFrame{i, now})
				ls.mu.Unlock()
			}
		}
	}()
	return lv, ls
}

func (ls *liveSession) frames() []liveFrame {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return slices.Clone(ls.got)
}

func (ls *liveSession) close() { ls.resp.Body.Close(); <-ls.done }

// sendFrames plays the camera: n numbered frames at fps to where the
// command says; it returns when each was sent.
func sendFrames(t testing.TB, cmd ingest.StreamCommand, n, fps int) []time.Time {
	t.Helper()
	s, err := media.NewSender(cmd.Host, cmd.Port, cmd.SSRC, 1200)
	must(t, err)
	defer s.Close()
	sent := make([]time.Time, n)
	tick := time.NewTicker(time.Second / time.Duration(fps))
	defer tick.Stop()
	for i := range n {
		<-tick.C
		sent[i] = time.Now()
		must(t, s.Send(grayFrame(i), sent[i]))
	}
	return sent
}

// latencies pairs what the viewer saw with when the camera sent it.
func latencies(got []liveFrame, sent []time.Time) []time.Duration {
	var out []time.Duration
	for _, f := range got {
		if f.index < len(sent) {
			out = append(out, f.at.Sub(sent[f.index]))
		}
	}
	return out
}

// TestLiveViewOnDemandThenWhileRecording: a viewer asks for a camera's
// live view; the camera streams to an agent that stores nothing, and the
// viewer sees its pictures, in order, through vigil up. A detection then
// takes the camera for a recording: the live stream gives way, the clip is
// recorded with its pre-roll, and live view now shows the recording.
func TestLiveViewOnDemandThenWhileRecording(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 3
	})
	addUser(t, ta, "watcher", "viewer", "watcher-pass-1", nil, nil)
	cam := newManualCamera(t, ta, "home", "door")
	testkit.WaitFor(t, 20*time.Second, "an agent and the camera", func() bool {
		var cs []coord.CameraView
		ta.api(t, "GET", "/api/v1/cameras", "watcher", "watcher-pass-1", &cs)
		return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" && len(cs) == 1
	})
	if code := ta.api(t, "POST", "/api/v1/cameras/home/nosuch/live", "watcher", "watcher-pass-1", nil); code != 404 {
		t.Errorf("live view of an unknown camera: %d, want 404", code)
	}

	lv, ls := openLive(t, ta, "home", "door", "watcher", "watcher-pass-1")
	if !lv.Live || lv.EventID != "" {
		t.Errorf("on-demand live view: %+v", lv.StreamView)
	}
	cmd := cam.command(t)
	if cmd.Action != "stream" || cmd.PreRoll != 0 || cmd.Duration != ta.cfg.Recording.LiveSeconds || cmd.EventID != "" {
		t.Fatalf("live stream command %+v", cmd)
	}
	sent := sendFrames(t, cmd, 30, 10)
	testkit.WaitFor(t, 5*time.Second, "the viewer to see the frames", func() bool { return len(ls.frames()) >= 29 })
	got := ls.frames()
	for i := 1; i < len(got); i++ {
		if got[i].index <= got[i-1].index {
			t.Fatalf("frames out of order: %v", got)
		}
	}
	lat := latencies(got, sent)
	slices.Sort(lat)
	t.Logf("live view, camera to viewer over loopback: %d frames, median %v, max %v", len(lat), lat[len(lat)/2], lat[len(lat)-1])

	// An intrusion takes the camera: the live-only stream ends (the
	// viewer's response with it) and the recording starts.
	ta.detect(t, "home", "door")
	if stop := cam.command(t); stop.Action != "stop" || stop.StreamID != cmd.StreamID {
		t.Fatalf("the camera was not told to stop its live stream first: %+v", stop)
	}
	rec := cam.command(t)
	if rec.EventID == "" || rec.PreRoll != ta.cfg.Recording.PreRollSeconds || rec.StreamID == cmd.StreamID {
		t.Fatalf("recording command %+v", rec)
	}
	select {
	case <-ls.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the live-only view did not end when the recording took the camera")
	}
	lv2, ls2 := openLive(t, ta, "home", "door", "watcher", "watcher-pass-1")
	defer ls2.close()
	if lv2.Live || lv2.EventID != rec.EventID || lv2.ID != rec.StreamID {
		t.Errorf("live view while recording is %+v, want the recording stream %s", lv2.StreamView, rec.StreamID)
	}
	sendFrames(t, rec, 30, 10)
	if n := len(ls2.frames()); n < 25 {
		t.Errorf("the viewer saw %d of 30 frames of the recording", n)
	}
	var clip coord.Clip
	testkit.WaitFor(t, 30*time.Second, "the recording's clip", func() bool {
		cs := ta.clips(t, "home")
		if len(cs) > 0 && cs[0].State == coord.ClipReady {
			clip = cs[0]
			return true
		}
		return false
	})
	if cs := ta.clips(t, "home"); len(cs) != 1 || clip.EventID != rec.EventID || clip.Frames < 25 {
		t.Errorf("clips %+v: want one, of the recording, not of the live view", cs)
	}

	// Live view nobody watches any more ends soon, freeing its agent's
	// slot, rather than running its full recording.live_seconds.
	cam2 := newManualCamera(t, ta, "home", "yard")
	testkit.WaitFor(t, 5*time.Second, "the second camera", func() bool {
		var cs []coord.CameraView
		ta.api(t, "GET", "/api/v1/cameras", "watcher", "watcher-pass-1", &cs)
		return len(cs) == 2
	})
	_, ls3 := openLive(t, ta, "home", "yard", "watcher", "watcher-pass-1")
	c3 := cam2.command(t)
	sending := make(chan struct{})
	sentAll := make(chan struct{})
	go func() { // the camera streams until it is told to stop
		defer close(sentAll)
		s, err := media.NewSender(c3.Host, c3.Port, c3.SSRC, 1200)
		if err != nil {
			return
		}
		defer s.Close()
		for i := 0; ; i++ {
			select {
			case <-sending:
				return
			case <-time.After(100 * time.Millisecond):
				s.Send(grayFrame(i), time.Now())
			}
		}
	}()
	testkit.WaitFor(t, 5*time.Second, "the viewer to see the yard", func() bool { return len(ls3.frames()) > 3 })
	left := time.Now()
	ls3.close()
	stop := cam2.command(t)
	close(sending)
	<-sentAll
	if stop.Action != "stop" || stop.StreamID != c3.StreamID {
		t.Fatalf("after the viewer left the camera got %+v, want a stop", stop)
	}
	t.Logf("live view ended %v after its last viewer left", time.Since(left).Round(time.Second))
	testkit.WaitFor(t, 10*time.Second, "the stream to end", func() bool { return len(ta.view(t).Streams) == 0 })
}

// BenchmarkLiveViewLatency measures how long a frame takes from the camera
// to a viewer of /api/v1/cameras/.../live.mjpeg on loopback (10 fps,
// 160x120): go test -run '^$' -bench LiveViewLatency ./internal/e2e
func BenchmarkLiveViewLatency(b *testing.B) {
	ta := startApp(b, func(c *conf.Config) { intrusionConfig(b, c) })
	cam := newManualCamera(b, ta, "home", "door")
	testkit.WaitFor(b, 20*time.Second, "an agent", func() bool {
		v := ta.view(b)
		return liveAgents(v) == 1 && v.Agents[0].Status == "ready"
	})
	var all []time.Duration
	for b.Loop() {
		_, ls := openLive(b, ta, "home", "door", "admin", adminPassword)
		cmd := cam.command(b)
		sent := sendFrames(b, cmd, 40, 10)
		time.Sleep(300 * time.Millisecond)
		all = append(all, latencies(ls.frames(), sent)...)
		ls.close()
		s, err := media.NewSender(cmd.Host, cmd.Port, cmd.SSRC, 0)
		must(b, err)
		s.Bye("done")
		testkit.WaitFor(b, 10*time.Second, "the live stream to end", func() bool { return len(ta.view(b).Streams) == 0 })
	}
	slices.Sort(all)
	if len(all) == 0 {
		b.Fatal("no frame reached the viewer")
	}
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(all[len(all)*95/100].Microseconds())/1000, "ms-p95")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "ms-max")
}
