package web

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func newUI(t *testing.T) *UI {
	t.Helper()
	u, err := New(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Pages need a session: without one the browser goes to the login page,
// and comes back to where it was going.
func TestPagesSendStrangersToLogin(t *testing.T) {
	h := newUI(t).Handler()
	for _, p := range []string{"/", "/devices", "/devices/t1", "/events", "/events/e1", "/live", "/live/home/cam1", "/agents", "/security", "/settings"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login?next="+strings.ReplaceAll(p, "/", "%2F") {
			t.Errorf("GET %s: %d to %q", p, w.Code, w.Header().Get("Location"))
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/login", nil))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `id="login-form"`) {
		t.Errorf("login page: %d", w.Code)
	}
	// Live video of RTSP cameras plays from a MediaSource's blob: URL.
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		!strings.Contains(csp, "media-src 'self' blob:;") {
		t.Errorf("CSP %q", csp)
	}
}

func TestSafeNextStaysOnSite(t *testing.T) {
	for in, want := range map[string]string{"/events/x": "/events/x", "/events?site=a%2Fb": "/events?site=a%2Fb", "": "/",
		"https://evil.example": "/", "//evil.example/x": "/", "/\\evil.example": "/", "/\t/evil.example": "/", "/\n/evil.example": "/",
		"/%09/evil.example": "/%09/evil.example", "javascript:alert(1)": "/",
		"/.//evil.example/x": "/", "/a/..//evil.example": "/", "/%2e//evil.example": "/", "/a/%2E%2e//evil.example?x=/": "/",
		"/./events": "/./events", "/events/../settings": "/events/../settings", "/events?next=//x": "/events?next=//x"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStaticFilesHaveTypesAndETags(t *testing.T) {
	h := newUI(t).Handler()
	for path, ctype := range map[string]string{
		"/static/app.css": "text/css", "/static/js/app.js": "text/javascript", "/sw.js": "text/javascript",
		"/static/icon.svg": "image/svg+xml", "/manifest.webmanifest": "application/manifest+json",
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) || w.Header().Get("ETag") == "" {
			t.Errorf("GET %s: %d %q etag %q", path, w.Code, w.Header().Get("Content-Type"), w.Header().Get("ETag"))
			continue
		}
		r := httptest.NewRequest("GET", path, nil)
		r.Header.Set("If-None-Match", w.Header().Get("ETag"))
		w2 := httptest.NewRecorder()
		h.ServeHTTP(w2, r)
		if w2.Code != http.StatusNotModified {
			t.Errorf("GET %s again with its ETag: %d, want 304", path, w2.Code)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/static/js/nosuch.js", nil))
	if w.Code != 404 {
		t.Errorf("a missing file: %d", w.Code)
	}
}

var importRe = regexp.MustCompile(`(?m)^import .* from '\./([\w.-]+\.js)';`)

// pageWeight is what a browser downloads for a page before any clip: the
// HTML, the stylesheet, the icon, the page's script and every module it
// imports.
func pageWeight(t *testing.T, u *UI, p page) int {
	t.Helper()
	w := httptest.NewRecorder()
	u.render(w, p.name, view{Page: p.name, Title: p.title, Script: p.script, User: "admin", Role: "admin", Admin: true, CSRF: "x", Params: map[string]string{}})
	html, _ := io.ReadAll(w.Body)
	n := len(html) + len(u.static["app.css"].body) + len(u.static["icon.svg"].body) + len(u.static["manifest.webmanifest"].body)
	seen := map[string]bool{}
	var add func(string)
	add = func(js string) {
		if seen[js] {
			return
		}
		seen[js] = true
		a, ok := u.static["js/"+js]
		if !ok {
			t.Fatalf("page %s imports js/%s, which does not exist", p.name, js)
		}
		n += len(a.body)
		for _, m := range importRe.FindAllStringSubmatch(string(a.body), -1) {
			add(m[1])
		}
	}
	add(p.script)
	return n
}

// No page weighs over 200 KB before clips (the budget).
func TestPageWeights(t *testing.T) {
	u := newUI(t)
	for _, p := range pages {
		n := pageWeight(t, u, p)
		t.Logf("%-9s %6.1f KB", p.name, float64(n)/1024)
		if n > 200*1024 {
			t.Errorf("page %s weighs %d bytes, over 200 KB", p.name, n)
		}
	}
}
