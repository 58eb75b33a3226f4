package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

func TestWatchPrintsRoundsAndASummary(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	url := fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)
	code, out, errOut := vigil(t, context.Background(), "", "watch", "--count", "3", "--interval", "100ms", url)
	t.Logf("stdout:\n%s", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"round 1  " + url + " up ", "round 3  " + url + " up ", "100.0%", "uptime", "p99 round trip", "100.00%"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output", want)
		}
	}
	if strings.Contains(out, "round 4") || strings.Contains(out, "DOWN") || strings.Contains(out, "Outages:") {
		t.Error("more than 3 rounds, or an outage")
	}
}

func TestWatchSaysABrokerIsDownAndExitsOne(t *testing.T) {
	url := fmt.Sprintf("mqtt://127.0.0.1:%d", testpeer.FreePort(t))
	code, out, errOut := vigil(t, context.Background(), "", "watch", "--count", "2", "--interval", "100ms", url)
	t.Logf("stdout:\n%s", out)
	if code != 1 || !strings.Contains(errOut, "1 of 1 brokers down at the end: "+url) {
		t.Errorf("exit %d: %s", code, errOut)
	}
	if strings.Count(out, "OUTAGE "+url+": ") != 1 || !strings.Contains(out, "connection refused") ||
		!strings.Contains(out, "round 2  "+url+" DOWN 0.0%") || !strings.Contains(out, "-> still down") {
		t.Error("the output does not say the broker is down, once")
	}
	// Flags may follow the URL.
	if code, out, errOut := vigil(t, context.Background(), "", "watch", url, "--count", "1"); code != 1 || !strings.Contains(out, "round 1  "+url+" DOWN") || strings.Contains(out, "round 2") {
		t.Errorf("flags after the URL: exit %d: %s\n%s", code, errOut, out)
	}
	if code, _, errOut := vigil(t, context.Background(), "", "watch", "http://example.com"); code != 2 || !strings.Contains(errOut, `scheme "http"`) {
		t.Errorf("a wrong scheme: %d %s", code, errOut)
	}
}

func TestWatchJSONAgainstVigilsBroker(t *testing.T) {
	a := startVigil(t, nil)
	url := a.Broker.URL("tcp")
	code, out, errOut := vigil(t, context.Background(), "", "watch", "--count", "2", "--interval", "100ms", "--json", url)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	var probes, statuses int
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v struct {
			Type        string            `json:"type"`
			OK          bool              `json:"ok"`
			RoundTripMS float64           `json:"round_trip_ms"`
			Sys         map[string]string `json:"sys"`
			Up          bool              `json:"up"`
			Uptime      float64           `json:"uptime_percent"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		switch v.Type {
		case "probe":
			probes++
			if !v.OK || v.RoundTripMS <= 0 {
				t.Errorf("probe %s", line)
			}
			t.Logf("Vigil's broker: round trip %.2f ms, $SYS %v", v.RoundTripMS, v.Sys)
		case "status":
			statuses++
			if !v.Up || v.Uptime != 100 {
				t.Errorf("status %s", line)
			}
		default:
			t.Errorf("unexpected line %s", line)
		}
	}
	if probes != 2 || statuses != 1 {
		t.Errorf("%d probe and %d status lines:\n%s", probes, statuses, out)
	}
}

// A broker that is down for the whole run is one alert on each channel:
// a signed webhook and an ntfy message, which vigil watch waits for
// before it exits.
func TestWatchAlertsItsChannelsOncePerOutage(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]*http.Request{}
	bodies := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		// Answer after vigil watch's last round: the alert goes out only
		// if vigil watch waits for it.
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], r)
		bodies[r.URL.Path] = b
		mu.Unlock()
	}))
	defer srv.Close()
	url := fmt.Sprintf("mqtt://127.0.0.1:%d", testpeer.FreePort(t))
	var out, errb testkit.Buffer
	code := run(context.Background(), []string{"watch", "--count", "3", "--interval", "50ms", url,
		"--webhook", srv.URL + "/hook", "--ntfy", srv.URL + "/brokers"},
		stdio{in: strings.NewReader(""), out: &out, err: &errb},
		[]string{"HOME=/nonexistent", "VIGIL_WEBHOOK_SECRET=hook-key", "VIGIL_NTFY_TOKEN=ntfy-token"})
	if code != 1 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got["/hook"]) != 1 || len(got["/brokers"]) != 1 {
		t.Fatalf("webhook got %d requests and ntfy %d, want one each", len(got["/hook"]), len(got["/brokers"]))
	}
	var n notify.Notification
	if err := json.Unmarshal(bodies["/hook"], &n); err != nil || n.Title != "Broker "+url+" is down" || !strings.Contains(n.Body, "refused") {
		t.Errorf("webhook body %s (%v)", bodies["/hook"], err)
	}
	if sig := got["/hook"][0].Header.Get(notify.HeaderSignature); sig != notify.Sign("hook-key", bodies["/hook"]) {
		t.Errorf("webhook signature %q does not match the body", sig)
	}
	if h := got["/brokers"][0].Header; h.Get("Authorization") != "Bearer ntfy-token" || !strings.Contains(h.Get("Title"), "is down") {
		t.Errorf("ntfy headers %v", h)
	}
	if strings.Contains(errb.String(), "hook-key") || strings.Contains(out.String(), "hook-key") {
		t.Error("the webhook secret was printed")
	}

	if code, _, errOut := vigil(t, context.Background(), "", "watch", "--webhook", "ftp://x", url); code != 2 || !strings.Contains(errOut, "--webhook ftp://x") {
		t.Errorf("a wrong webhook URL: %d %s", code, errOut)
	}
}
