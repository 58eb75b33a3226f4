package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
)

// stream: GET /api/v1/stream[?events=reading,event&device=ID]: server-sent
// events, one "event:" line with the kind and one "data:" line of JSON each.
// A comment every 15 s keeps proxies from closing the connection.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if s.deps.Hub == nil {
		s.writeError(w, r, vigil.Errorf(vigil.EUnavailable, "live updates are not enabled"))
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		s.writeError(w, r, vigil.Errorf(vigil.EInternal, "streaming unsupported"))
		return
	}
	split := func(v string) []string {
		if v == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	sub := s.deps.Hub.Subscribe(split(r.URL.Query().Get("events")), split(r.URL.Query().Get("device")))
	defer s.deps.Hub.Unsubscribe(sub)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	ctx, cancel := s.streamContext(r)
	defer cancel()
	var dropped int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case m := <-sub.C:
			b, err := json.Marshal(m.Data)
			if err != nil {
				continue
			}
			if d := sub.Dropped.Load(); d != dropped {
				fmt.Fprintf(w, "event: dropped\ndata: %d\n\n", d-dropped)
				dropped = d
			}
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.Event, b)
		}
		flusher.Flush()
	}
}
