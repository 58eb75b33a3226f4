package e2e_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

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
