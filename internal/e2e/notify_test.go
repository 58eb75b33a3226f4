package e2e_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/httpapi"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/testkit"
)

// receiver is a webhook or ntfy endpoint that records what it gets; it
// answers the first `fail` requests with 500.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	fail int
	reqs []received
}

type received struct {
	at     time.Time
	header http.Header
	body   []byte
	status int
}

func newReceiver(t *testing.T, fail int) *receiver {
	rc := &receiver{fail: fail}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		status := 200
		if rc.fail > 0 {
			rc.fail--
			status = 500
		}
		rc.reqs = append(rc.reqs, received{time.Now(), r.Header.Clone(), b, status})
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// allowLocalReceivers lets notifications reach the receivers, httptest
// servers on 127.0.0.1, as an owner allows an ntfy server on the same
// machine (notify.allow_targets).
func allowLocalReceivers(c *conf.Config) {
	c.Notify.AllowTargets = append(c.Notify.AllowTargets, "127.0.0.1")
}

// ok returns the requests it accepted.
func (rc *receiver) ok() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []received
	for _, r := range rc.reqs {
		if r.status == 200 {
			out = append(out, r)
		}
	}
	return out
}

func (rc *receiver) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

func (ta *testApp) apiJSON(t *testing.T, method, path string, in, out any) int {
	t.Helper()
	b, _ := json.Marshal(in)
	req, _ := http.NewRequest(method, "http://"+ta.HTTP.Addr().String()+path, bytes.NewReader(b))
	req.SetBasicAuth("admin", adminPassword)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		must(t, json.Unmarshal(body, out))
	} else if resp.StatusCode >= 300 {
		t.Logf("%s %s: %d %s", method, path, resp.StatusCode, body)
	}
	return resp.StatusCode
}

// presence makes a motion sensor see someone, then no one.
func (ta *testApp) presence(t *testing.T, site, sensor string) {
	t.Helper()
	ta.detect(t, site, sensor)
	must(t, ta.Broker.Publish("vigil/"+site+"/"+sensor+"/motion", []byte(`{"distance_m":4}`), false, 1))
}

// TestIntrusionNotificationsReachWebhookAndNtfy: each intrusion event
// reaches a signed webhook and an ntfy topic exactly once within 2 s; a
// second event from the same sensor within the cooldown is not sent; a
// webhook that fails at first gets the notification on a retry.
func TestIntrusionNotificationsReachWebhookAndNtfy(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { intrusionConfig(t, c); allowLocalReceivers(c) })
	hook := newReceiver(t, 1) // fails once: the retry must deliver
	ntfy := newReceiver(t, 0)
	var hv, nv httpapi.ChannelView
	secret := "hook-secret-1"
	if code := ta.apiJSON(t, "POST", "/api/v1/notify/channels", map[string]any{
		"kind": "webhook", "name": "hook", "url": hook.srv.URL + "/vigil", "secret": secret, "cooldown_s": 30,
	}, &hv); code != 201 || !hv.HasSecret || hv.CooldownS != 30 {
		t.Fatalf("create webhook channel: %d %+v", code, hv)
	}
	if code := ta.apiJSON(t, "POST", "/api/v1/notify/channels", map[string]any{
		"kind": "ntfy", "name": "phone", "url": ntfy.srv.URL + "/vigil-alerts", "site": "home", "cooldown_s": 30,
	}, &nv); code != 201 {
		t.Fatalf("create ntfy channel: %d", code)
	}
	var bad map[string]any
	if code := ta.apiJSON(t, "POST", "/api/v1/notify/channels", map[string]any{"kind": "ntfy", "name": "x", "url": "ftp://nope"}, &bad); code != 400 {
		t.Errorf("a channel with a bad URL: %d, want 400", code)
	}

	waitForEvents := func(n int) []detect.Event {
		var evs []detect.Event
		testkit.WaitFor(t, 10*time.Second, "the events", func() bool {
			ta.api(t, "GET", "/api/v1/events?site=home", "admin", adminPassword, &evs)
			return len(evs) >= n
		})
		return evs
	}
	within := func(rc *receiver, n int, since time.Time, what string) {
		t.Helper()
		testkit.WaitFor(t, 2*time.Second, what, func() bool { return len(rc.ok()) >= n })
		got := rc.ok()[n-1]
		t.Logf("%s after %v", what, got.at.Sub(since).Round(time.Millisecond))
	}

	t0 := time.Now()
	ta.presence(t, "home", "pir1")
	evs := waitForEvents(1)
	within(hook, 1, t0, "the webhook (after one failure)")
	within(ntfy, 1, t0, "the ntfy topic")
	h := hook.all()
	if len(h) != 2 || h[0].header.Get(notify.HeaderDelivery) != h[1].header.Get(notify.HeaderDelivery) {
		t.Fatalf("the webhook got %d requests; want a failure then its retry with the same delivery id", len(h))
	}
	if sig := h[1].header.Get(notify.HeaderSignature); sig != notify.Sign(secret, h[1].body) {
		t.Errorf("webhook signature %q does not match the body", sig)
	}
	var note notify.Notification
	must(t, json.Unmarshal(h[1].body, &note))
	if note.Kind != notify.KindIntrusion || note.Site != "home" || note.Sensor != "pir1" || note.EventID != evs[0].ID {
		t.Errorf("webhook body %+v, want the intrusion event %s", note, evs[0].ID)
	}
	if n := ntfy.ok()[0]; n.header.Get("Title") == "" || !bytes.Contains(n.body, []byte("pir1")) {
		t.Errorf("ntfy message: title %q body %q", n.header.Get("Title"), n.body)
	}

	// The same sensor again, within the 30 s cooldown: a new event, no
	// notification.
	ta.presence(t, "home", "pir1")
	waitForEvents(2) // saved after it was handed to the notifier
	drain(t, ta)
	if len(hook.ok()) != 1 || len(ntfy.ok()) != 1 {
		t.Fatalf("during the cooldown: webhook %d, ntfy %d notifications; want 1 each", len(hook.ok()), len(ntfy.ok()))
	}

	// Another sensor has its own cooldown.
	t1 := time.Now()
	ta.presence(t, "home", "pir2")
	waitForEvents(3)
	within(hook, 2, t1, "the webhook, second sensor")
	within(ntfy, 2, t1, "the ntfy topic, second sensor")
	drain(t, ta)
	if len(hook.ok()) != 2 || len(ntfy.ok()) != 2 {
		t.Errorf("after the second sensor: webhook %d, ntfy %d; want exactly 2 each", len(hook.ok()), len(ntfy.ok()))
	}

	// The delivery log shows the retry.
	var ds []notify.Delivery
	ta.api(t, "GET", "/api/v1/notify/deliveries?channel="+hv.ID, "admin", adminPassword, &ds)
	if len(ds) != 2 || !ds[1].OK || ds[1].Attempts != 2 || !ds[0].OK || ds[0].Attempts != 1 {
		t.Errorf("webhook deliveries %+v: want the first after 2 attempts, the second after 1", ds)
	}
	// The test button sends at once, cooldown or not.
	var ok map[string]bool
	if code := ta.apiJSON(t, "POST", "/api/v1/notify/channels/"+nv.ID+"/test", nil, &ok); code != 200 || len(ntfy.ok()) != 3 {
		t.Errorf("test notification: %d, ntfy has %d", code, len(ntfy.ok()))
	}
	// Viewers see no channels.
	addUser(t, ta, "guest", "viewer", "guest-pass-1", nil, nil)
	if code := ta.api(t, "GET", "/api/v1/notify/channels", "guest", "guest-pass-1", nil); code != 403 {
		t.Errorf("a viewer listing channels: %d, want 403", code)
	}
}

// apiAs calls the API as a user with a JSON body and returns the status and
// the answer.
func (ta *testApp) apiAs(t *testing.T, user, password, method, path string, in any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(in)
	req, _ := http.NewRequest(method, "http://"+ta.HTTP.Addr().String()+path, bytes.NewReader(b))
	req.SetBasicAuth(user, password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// pushSubscription is what a browser posts: an endpoint and fresh keys.
func pushSubscription(t *testing.T, endpoint string) map[string]any {
	t.Helper()
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	must(t, err)
	enc := base64.RawURLEncoding.EncodeToString
	return map[string]any{"endpoint": endpoint, "keys": map[string]string{"p256dh": enc(key.PublicKey().Bytes()), "auth": enc(make([]byte, 16))}}
}

// TestViewersCannotPointVigilAtLocalServices: a push subscription is a URL
// Vigil will POST to, so only real push services' https endpoints are
// taken, at most 10 per user, and nobody takes over another user's; an
// admin's webhook or ntfy channel cannot target loopback or link-local
// addresses unless notify.allow_targets says so.
func TestViewersCannotPointVigilAtLocalServices(t *testing.T) {
	ta := startApp(t, nil)
	addUser(t, ta, "vera", "viewer", "vera-pass-1", nil, nil)
	addUser(t, ta, "mallory", "viewer", "mallory-pass-1", nil, nil)
	own := "http://" + ta.HTTP.Addr().String()

	for _, tc := range []struct{ name, endpoint string }{
		{"Vigil's own API over http", own + "/api/v1/sites/home/disarm"},
		{"Vigil's own API over https", "https://" + ta.HTTP.Addr().String() + "/api/v1/users"},
		{"a LAN host", "https://192.168.1.1/cgi-bin/reboot"},
		{"a cloud metadata service", "https://169.254.169.254/latest/meta-data"},
		{"a host that is no push service", "https://push.example.net/x"},
		{"a push service over http", "http://fcm.googleapis.com/fcm/send/x"},
		{"a push service's look-alike", "https://fcm.googleapis.com.evil.example/fcm/send/x"},
		{"a push service with credentials", "https://user:pw@fcm.googleapis.com/fcm/send/x"},
	} {
		t.Run("a viewer cannot subscribe "+tc.name, func(t *testing.T) {
			if code, body := ta.apiAs(t, "vera", "vera-pass-1", "POST", "/api/v1/notify/subscriptions", pushSubscription(t, tc.endpoint)); code != 400 {
				t.Errorf("POST %s: %d %s, want 400", tc.endpoint, code, body)
			}
		})
	}

	endpoint := func(i int) string { return fmt.Sprintf("https://fcm.googleapis.com/fcm/send/vera-%d", i) }
	t.Run("a viewer subscribes 10 browsers and no more", func(t *testing.T) {
		for i := range 10 {
			if code, body := ta.apiAs(t, "vera", "vera-pass-1", "POST", "/api/v1/notify/subscriptions", pushSubscription(t, endpoint(i))); code != 201 {
				t.Fatalf("subscription %d: %d %s", i+1, code, body)
			}
		}
		code, body := ta.apiAs(t, "vera", "vera-pass-1", "POST", "/api/v1/notify/subscriptions", pushSubscription(t, endpoint(10)))
		if code != 409 || !strings.Contains(body, "10") {
			t.Errorf("the 11th subscription: %d %s, want 409 saying the limit", code, body)
		}
		// Renewing one that exists is no new subscription.
		if code, body := ta.apiAs(t, "vera", "vera-pass-1", "POST", "/api/v1/notify/subscriptions", pushSubscription(t, endpoint(3))); code != 201 {
			t.Errorf("renewing a subscription at the limit: %d %s", code, body)
		}
	})

	subs := func() map[string]string {
		list, err := ta.Store.ListPushSubscriptions(context.Background())
		must(t, err)
		owners := map[string]string{}
		for _, s := range list {
			owners[s.Endpoint] = s.User + " " + s.P256dh
		}
		return owners
	}
	t.Run("another user cannot take over a subscription", func(t *testing.T) {
		before := subs()
		code, body := ta.apiAs(t, "mallory", "mallory-pass-1", "POST", "/api/v1/notify/subscriptions", pushSubscription(t, endpoint(0)))
		if code != 403 {
			t.Errorf("mallory posting vera's endpoint: %d %s, want 403", code, body)
		}
		if code, body := ta.apiAs(t, "mallory", "mallory-pass-1", "DELETE", "/api/v1/notify/subscriptions", map[string]any{"endpoint": endpoint(0)}); code != 403 {
			t.Errorf("mallory deleting vera's endpoint: %d %s, want 403", code, body)
		}
		if after := subs(); !maps.Equal(before, after) {
			t.Errorf("the subscriptions changed:\nbefore %v\nafter  %v", before, after)
		}
		if code, body := ta.apiAs(t, "vera", "vera-pass-1", "DELETE", "/api/v1/notify/subscriptions", map[string]any{"endpoint": endpoint(0)}); code != 200 {
			t.Errorf("vera deleting her own endpoint: %d %s", code, body)
		}
	})

	hook := newReceiver(t, 0)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(hook.srv.URL, "http://"))
	for _, tc := range []struct {
		name, url string
		want      int
	}{
		{"a webhook on 127.0.0.1", hook.srv.URL + "/hook", 400},
		{"a webhook on localhost", "http://localhost:" + port + "/hook", 400},
		{"a webhook on ::1", "http://[::1]:" + port + "/hook", 400},
		{"a webhook on 0.0.0.0", "http://0.0.0.0:" + port + "/hook", 400},
		{"a webhook on a link-local address", "http://169.254.169.254/latest/meta-data", 400},
		{"a webhook on an IPv6 link-local address", "http://[fe80::1]/hook", 400},
		{"a webhook on a multicast address", "http://224.0.0.1/hook", 400},
		{"a webhook on a LAN address", "http://192.168.1.10:8123/api/webhook/vigil", 201},
	} {
		t.Run(fmt.Sprintf("an admin's channel: %s answers %d", tc.name, tc.want), func(t *testing.T) {
			for _, kind := range []string{"webhook", "ntfy"} {
				code, body := ta.apiAs(t, "admin", adminPassword, "POST", "/api/v1/notify/channels", map[string]any{"kind": kind, "name": tc.name, "url": tc.url})
				if code != tc.want {
					t.Errorf("%s to %s: %d %s, want %d", kind, tc.url, code, body, tc.want)
				}
			}
		})
	}
	if n := len(hook.all()); n != 0 {
		t.Errorf("the loopback receiver got %d requests", n)
	}
}
