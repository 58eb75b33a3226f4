package agent

// The live view: a stream's frames as multipart JPEG over HTTP.

import (
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"time"
)

// liveBoundary separates the frames of a live view.
const liveBoundary = "frame"

// live serves a stream's frames as they arrive, as multipart JPEG
// (multipart/x-mixed-replace), to whoever holds the stream's live token:
// vigil up, which proxies it to signed-in users. A stream without a token
// cannot be watched.
func (a *Agent) live(w http.ResponseWriter, r *http.Request) {
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
