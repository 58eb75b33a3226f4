package e2e_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/users"
)

// browser is an HTTP client with a cookie jar, like a browser tab.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newBrowser(t *testing.T, ta *testApp) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: "http://" + ta.HTTP.Addr().String(), c: &http.Client{Jar: jar}}
}

func (b *browser) do(method, path, contentType string, body []byte, headers map[string]string) (int, []byte, http.Header) {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.base+path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header
}

func (b *browser) login(user, password string) int {
	b.t.Helper()
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	code, out, _ := b.do("POST", "/api/v1/login", "application/json", body, nil)
	if code == 200 {
		var me struct{ CSRF string }
		json.Unmarshal(out, &me)
		b.csrf = me.CSRF
	}
	return code
}

func TestSessionsCSRFAndLoginRateLimit(t *testing.T) {
	ta := startApp(t, nil)
	addUser(t, ta, "viewer2", users.RoleViewer, "viewer2-password", nil, nil)
	b := newBrowser(t, ta)

	if code, _, _ := b.do("GET", "/api/v1/me", "", nil, nil); code != 401 {
		t.Errorf("me before login: %d", code)
	}
	form := []byte("username=admin&password=" + adminPassword)
	if code, _, _ := b.do("POST", "/api/v1/login", "application/x-www-form-urlencoded", form, nil); code != 400 {
		t.Errorf("a form-encoded login (what a cross-site form can send): %d, want 400", code)
	}
	if code := b.login("admin", adminPassword); code != 200 || len(b.csrf) < 20 {
		t.Fatalf("login: %d csrf %q", code, b.csrf)
	}
	if code, out, _ := b.do("GET", "/api/v1/me", "", nil, nil); code != 200 || !strings.Contains(string(out), `"role": "admin"`) {
		t.Errorf("me: %d %s", code, out)
	}
	t.Run("a state-changing request without the CSRF token is refused", func(t *testing.T) {
		code, out, _ := b.do("POST", "/api/v1/sites/home/disarm", "", nil, nil)
		if code != 403 || !strings.Contains(string(out), "CSRF") {
			t.Errorf("without token: %d %s", code, out)
		}
		if code, _, _ := b.do("POST", "/api/v1/sites/home/disarm", "", nil, map[string]string{"X-CSRF-Token": "forged"}); code != 403 {
			t.Errorf("with a wrong token: %d", code)
		}
		if code, _, _ := b.do("POST", "/api/v1/sites/home/disarm", "", nil, map[string]string{"X-CSRF-Token": b.csrf}); code != 200 {
			t.Errorf("with the token: %d", code)
		}
	})
	t.Run("scripts with Basic auth need no CSRF token", func(t *testing.T) {
		if code := ta.api(t, "POST", "/api/v1/sites/home/arm", "admin", adminPassword, nil); code != 200 {
			t.Errorf("basic auth arm: %d", code)
		}
	})
	t.Run("logout ends the session", func(t *testing.T) {
		if code, _, _ := b.do("POST", "/api/v1/logout", "", nil, map[string]string{"X-CSRF-Token": b.csrf}); code != 200 {
			t.Fatalf("logout: %d", code)
		}
		if code, _, _ := b.do("GET", "/api/v1/me", "", nil, nil); code != 401 {
			t.Errorf("me after logout: %d", code)
		}
	})
	t.Run("wrong passwords are rate-limited", func(t *testing.T) {
		v := newBrowser(t, ta)
		for i := range 5 {
			if code := v.login("viewer2", "wrong-password"); code != 401 {
				t.Fatalf("attempt %d: %d, want 401", i+1, code)
			}
		}
		code, out, hdr := v.do("POST", "/api/v1/login", "application/json", []byte(`{"username":"viewer2","password":"viewer2-password"}`), nil)
		if code != 429 || hdr.Get("Retry-After") == "" {
			t.Fatalf("sixth attempt, right password: %d %s (Retry-After %q); want 429", code, out, hdr.Get("Retry-After"))
		}
		// Basic auth shares the limit.
		req, _ := http.NewRequest("GET", v.base+"/api/v1/devices", nil)
		req.SetBasicAuth("viewer2", "viewer2-password")
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != 429 {
			t.Errorf("basic auth while limited: %d", resp.StatusCode)
		}
	})
}

func TestServerSentEventsCarryReadings(t *testing.T) {
	ta := startApp(t, nil)
	b := newBrowser(t, ta)
	if code := b.login("admin", adminPassword); code != 200 {
		t.Fatalf("login: %d", code)
	}
	req, _ := http.NewRequest("GET", b.base+"/api/v1/stream?events=reading&device=sse1", nil)
	resp, err := b.c.Do(req)
	must(t, err)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	got := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				got <- sc.Text()
			}
		}
	}()
	start := time.Now()
	for _, dev := range []string{"other", "sse1"} {
		must(t, ta.Broker.Publish("vigil/lab/"+dev+"/telemetry", []byte(`{"type":"temperature","value":21.5,"units":"Celsius"}`), false, 1))
	}
	select {
	case line := <-got:
		if !strings.Contains(line, `"device":"sse1"`) || !strings.Contains(line, `"value":21.5`) {
			t.Errorf("event %s", line)
		}
		t.Logf("reading reached the browser stream in %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
}

// A browser's cross-site request cannot change anything, even when the
// browser remembers Basic credentials for Vigil (which bypass the CSRF
// token); and a body must be declared JSON, which an HTML form cannot.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	ta := startApp(t, nil)
	base := "http://" + ta.HTTP.Addr().String()
	post := func(path, ctype, body string, headers map[string]string) int {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.SetBasicAuth("admin", adminPassword)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	form := `{"name":"evil","role":"admin","password":"evil-password-1","x":"=1"}`
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}} {
		if code := post("/api/v1/sites/home/disarm", "", "", h); code != 403 {
			t.Errorf("cross-site disarm with %v: %d, want 403", h, code)
		}
		if code := post("/api/v1/users", "text/plain", form, h); code != 403 {
			t.Errorf("cross-site text/plain user creation with %v: %d, want 403", h, code)
		}
	}
	if code := post("/api/v1/users", "text/plain", form, nil); code != 400 {
		t.Errorf("a text/plain body: %d, want 400", code)
	}
	if code := post("/api/v1/sites/home/disarm", "", "", map[string]string{"Sec-Fetch-Site": "same-origin"}); code != 200 {
		t.Errorf("same-origin disarm: %d, want 200", code)
	}
	var us []users.User
	ta.api(t, "GET", "/api/v1/users", "admin", adminPassword, &us)
	for _, u := range us {
		if u.Name == "evil" {
			t.Error("a cross-site request created a user")
		}
	}
}

// Guesses sent all at once are limited like guesses in a row: each try is
// counted before its password is checked. (The same password sent many
// times at once is one guess, checked once: a guesser sends different
// ones.)
func TestParallelGuessesAreLimited(t *testing.T) {
	ta := startApp(t, nil)
	b := newBrowser(t, ta)
	codes := make(chan int, 40)
	for i := range 40 {
		go func() {
			body := fmt.Sprintf(`{"username":"admin","password":"guess-%d"}`, i)
			resp, err := http.Post(b.base+"/api/v1/login", "application/json", strings.NewReader(body))
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	n := map[int]int{}
	for range 40 {
		n[<-codes]++
	}
	if n[401] != 5 || n[429] != 35 {
		t.Errorf("40 parallel guesses: %v; want 5 checked (401) and 35 refused (429)", n)
	}
}

// Behind a trusted reverse proxy the limiter counts the real client, so
// one client's typos do not lock out everyone; X-Forwarded-For from
// anyone else is ignored.
func TestTrustedProxyClientsAreLimitedApart(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		ta := startApp(t, func(c *conf.Config) {
			if trusted {
				c.HTTP.TrustedProxies = []string{"127.0.0.1"}
			}
		})
		b := newBrowser(t, ta)
		login := func(client, password string) int {
			body := `{"username":"admin","password":"` + password + `"}`
			code, _, _ := b.do("POST", "/api/v1/login", "application/json", []byte(body), map[string]string{"X-Forwarded-For": client})
			return code
		}
		for range 5 {
			login("203.0.113.1", "wrong-password")
		}
		if code := login("203.0.113.1", adminPassword); code != 429 {
			t.Errorf("trusted=%v: the guessing client: %d, want 429", trusted, code)
		}
		want := 429 // without a trusted proxy, everyone is 127.0.0.1
		if trusted {
			want = 200
		}
		if code := login("203.0.113.2", adminPassword); code != want {
			t.Errorf("trusted=%v: another client: %d, want %d", trusted, code, want)
		}
	}
}
