package agent

// The live view: a stream's frames as multipart JPEG over HTTP.

import (
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"

	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/rtspcam"
)

// liveBoundary separates the frames of a live view.
const liveBoundary = "frame"

// live serves a stream's frames as they arrive, as multipart JPEG
// (multipart/x-mixed-replace), to whoever holds the stream's live token:
// vigil up, which proxies it to signed-in users. A stream without a token
// cannot be watched.
func (a *Agent) live(w http.ResponseWriter, r *http.Request) {
	if id, ok := strings.CutSuffix(r.PathValue("id"), ".mp4"); ok {
		a.liveMP4(w, r, id)
		return
	}
	a.mu.Lock()
	s := a.byID[r.PathValue("id")]
	a.mu.Unlock()
	token := r.URL.Query().Get("token")
	if s == nil || s.cmd.LiveToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.cmd.LiveToken)) != 1 {
		http.Error(w, "no such stream", http.StatusNotFound)
		return
	}
	frames, cancel, ok := s.watch()
	if !ok {
		http.Error(w, "stream ended", http.StatusGone)
		return
	}
	defer cancel()
	w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+liveBoundary)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// Each frame is followed at once by the next boundary, not preceded by
	// it: a reader (a browser) knows a frame is whole when it sees the
	// boundary, so it shows the frame as soon as it arrives rather than
	// when the next one starts. mime/multipart writes boundaries first.
	if _, err := io.WriteString(w, "--"+liveBoundary+"\r\n"); err != nil {
		return
	}
	rc.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case jpeg, ok := <-frames:
			if !ok {
				return
			}
			rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(w, "Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", len(jpeg)); err != nil {
				return
			}
			if _, err := w.Write(jpeg); err != nil {
				return
			}
			if _, err := io.WriteString(w, "\r\n--"+liveBoundary+"\r\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// liveMP4 serves an RTSP stream's video as it comes, as fragmented MP4
// for Media Source Extensions: the header, then a fragment per picture
// (and per audio frame), from the last keyframe the feed holds. The
// samples are the camera's; nothing is decoded. Its timeline starts at 0;
// X-Vigil-Origin says the wall-clock time of 0 (Unix milliseconds) and
// X-Vigil-Codec the type a browser's SourceBuffer takes. A change of
// format ends the response (the page asks again).
func (a *Agent) liveMP4(w http.ResponseWriter, r *http.Request, id string) {
	a.mu.Lock()
	p := a.pulls[id]
	a.mu.Unlock()
	token := r.URL.Query().Get("token")
	if p == nil || p.cmd.LiveToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(p.cmd.LiveToken)) != 1 {
		http.Error(w, "no such stream", http.StatusNotFound)
		return
	}
	sub := p.ref.feed.Subscribe(0, 256)
	defer sub.Close()
	var format *media.AVFormat
	var origin int64 = -1 // the first picture's DTS (90 kHz)
	var audioOrigin int64
	var seq uint32
	lastDur := [2]uint32{media.VideoClock / 15, 1024}
	lastDTS := [2]int64{-1, -1}
	rc := http.NewResponseController(w)
	write := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for {
		var it rtspcam.Item
		var ok bool
		select {
		case <-r.Context().Done():
			return
		case <-timeout.C:
			if format == nil {
				http.Error(w, "the camera sent no picture", http.StatusGatewayTimeout)
			}
			return
		case <-p.done:
			return
		case it, ok = <-sub.C():
			if !ok {
				return
			}
		}
		if it.Format != nil {
			if format != nil {
				return // a new format: the page starts again
			}
			continue
		}
		if format == nil {
			f := p.ref.feed.Format()
			if f == nil || it.AU.Track != media.TrackVideo || !it.AU.Key {
				continue
			}
			format = f
			init, err := f.InitSegment()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			origin = it.AU.DTS
			if f.Audio != nil {
				audioOrigin = media.TicksAt(media.TimeOfTicks(origin, media.VideoClock), int64(f.Audio.SampleRate))
			}
			w.Header().Set("Content-Type", "video/mp4")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("X-Vigil-Codec", f.MIME())
			w.Header().Set("X-Vigil-Origin", fmt.Sprint(media.TimeOfTicks(origin, media.VideoClock).UnixMilli()))
			w.WriteHeader(http.StatusOK)
			timeout.Stop()
			if !write(init) {
				return
			}
		}
		au := it.AU
		base := au.DTS - origin
		if au.Track == media.TrackAudio {
			base = au.DTS - audioOrigin
		}
		if base < 0 {
			continue
		}
		s, err := format.Sample(au)
		if err != nil {
			continue
		}
		// The duration is not known until the next sample: the last one's
		// stands in, so that a picture goes out the moment it arrives.
		if l := lastDTS[au.Track]; l >= 0 && au.DTS > l && au.DTS-l < 1<<31 {
			lastDur[au.Track] = uint32(au.DTS - l)
		}
		lastDTS[au.Track] = au.DTS
		s.Duration = lastDur[au.Track]
		seq++
		part := fmp4.Part{SequenceNumber: seq, Tracks: []*fmp4.PartTrack{{ID: au.Track + 1, BaseTime: uint64(base), Samples: []*fmp4.Sample{s}}}}
		var buf seekablebuffer.Buffer
		if err := part.Marshal(&buf); err != nil {
			continue
		}
		if !write(buf.Bytes()) {
			return
		}
	}
}
