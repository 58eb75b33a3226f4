package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/coord"
)

// openTest starts a server with every dependency (allDeps) on loopback.
func openTest(t *testing.T, deps Deps) *Server {
	t.Helper()
	s, err := Open("127.0.0.1:0", deps, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestSlowBodiesAreCutOff: a client that sends its headers, then trickles
// the body a byte at a time, does not hold a connection (and a handler)
// for longer than the body timeout.
func TestSlowBodiesAreCutOff(t *testing.T) {
	deps := allDeps(t)
	deps.ReadTimeout = 300 * time.Millisecond
	s := openTest(t, deps)
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/login HTTP/1.1\r\nHost: vigil\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a byte every 50 ms: 1000 bytes would take 50 s
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	took := time.Since(start)
	if took > 5*time.Second {
		t.Fatalf("the slow body held the connection for %v (answer %q, %v)", took, line, err)
	}
	if err == nil && !strings.HasPrefix(line, "HTTP/1.1 4") {
		t.Errorf("answer %q, want a 4xx or the connection closed", line)
	}
	t.Logf("cut off after %v: %q %v", took.Round(time.Millisecond), strings.TrimSpace(line), err)
}

// clipSource serves one clip.
type clipSource struct {
	Intrusion
	clip coord.Clip
}

func (c clipSource) GetClip(_ context.Context, id string) (coord.Clip, error) {
	if id != c.clip.ID {
		return coord.Clip{}, vigil.Errorf(vigil.ENotFound, "no clip %q", id)
	}
	return c.clip, nil
}

// TestResponsesAreNotSniffedOrCached: API answers, errors, metrics and
// clips say nosniff, and nothing signed-in users see is kept by the
// browser's cache after they log out.
func TestResponsesAreNotSniffedOrCached(t *testing.T) {
	deps := allDeps(t)
	dir := filepath.Join(deps.ClipStorage, "home", "cam1")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"clip.mp4", "thumb.jpg"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("<html><script>alert(1)</script>"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deps.Intrusion = clipSource{clip: coord.Clip{ID: "c1", Site: "home", Camera: "cam1", State: coord.ClipReady,
		File: "home/cam1/clip.mp4", Thumbnail: "home/cam1/thumb.jpg"}}
	s := openTest(t, deps)
	for _, tc := range []struct {
		path  string
		user  bool
		cache string // "" = no-store
	}{
		{"/api/v1/clips/c1/video", true, ""},
		{"/api/v1/clips/c1/video?download=1", true, ""},
		{"/api/v1/clips/c1/thumbnail", true, ""},
		{"/api/v1/clips/c1", true, ""},
		{"/api/v1/clips/nope/video", true, ""},
		{"/api/v1/system", false, ""},
		{"/metrics", true, ""},
		{"/healthz", false, ""},
		{"/api/v1/openapi.json", false, "no-cache"},
	} {
		t.Run(tc.path+" says nosniff and "+map[string]string{"": "no-store"}[tc.cache]+tc.cache, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+tc.path, nil)
			if tc.user {
				req.SetBasicAuth("viewer", "any")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			want := tc.cache
			if want == "" {
				want = "no-store"
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%d: X-Content-Type-Options %q, want nosniff", resp.StatusCode, got)
			}
			if got := resp.Header.Get("Cache-Control"); got != want {
				t.Errorf("%d: Cache-Control %q, want %q", resp.StatusCode, got, want)
			}
		})
	}
}

// TestTheReadTimeoutDoesNotEndStreams: the read timeout bounds how long a
// request takes to arrive, not how long its answer lasts: the event stream
// outlives it.
func TestTheReadTimeoutDoesNotEndStreams(t *testing.T) {
	const timeout = 200 * time.Millisecond
	deps := allDeps(t)
	deps.ReadTimeout = timeout
	s := openTest(t, deps)
	req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/api/v1/stream", nil)
	req.SetBasicAuth("viewer", "any")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/stream: %d", resp.StatusCode)
	}
	got := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the stream ended (%v) before 3 read timeouts", err)
	case <-time.After(3 * timeout):
	}
}
