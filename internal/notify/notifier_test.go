package notify_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/testkit"
)

func intrusion(e *env, id, camera string, priority int) notify.Notification {
	return notify.Notification{Kind: notify.KindIntrusion, Site: "home", Camera: camera, Sensor: "pir-1", EventID: id,
		Title: "Intrusion at home", Body: "Motion near " + camera, Priority: priority, Time: e.clock.Now(), URL: "/events/" + id}
}

func TestWebhookAndNtfyGetOneNotificationPerCameraPerCooldown(t *testing.T) {
	hooks := newReceiver(t, nil)
	ntfy := newReceiver(t, nil)
	e := newEnv(t, nil, notify.Options{})
	const hookSecret, ntfyToken = "hook-secret-8e1f", "tk_ntfy-token-77ab"
	const cooldown = 300 * time.Millisecond
	e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "hook", Site: "home", Enabled: true,
		Cooldown: cooldown, URL: hooks.URL + "/hook", Secret: hookSecret})
	e.addChannel(t, notify.Channel{Kind: notify.ChannelNtfy, Name: "phone", Enabled: true,
		Cooldown: cooldown, URL: ntfy.URL + "/vigil-alerts", Secret: ntfyToken})

	both := func(n int) func() bool {
		return func() bool { return hooks.count("") == n && ntfy.count("") == n }
	}
	ev1 := intrusion(e, "ev1", "cam1", 70)
	e.n.Notify(ev1)
	testkit.WaitFor(t, 2*time.Second, "one webhook and one ntfy request", both(1))

	t.Run("the webhook carries the notification, signed", func(t *testing.T) {
		r := hooks.requests("")[0]
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
		if got := r.Header.Get(notify.HeaderEvent); got != "intrusion" {
			t.Errorf("X-Vigil-Event = %q", got)
		}
		mac := hmac.New(sha256.New, []byte(hookSecret))
		mac.Write(r.Body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if got := r.Header.Get(notify.HeaderSignature); !hmac.Equal([]byte(got), []byte(want)) {
			t.Errorf("X-Vigil-Signature = %q, want %q", got, want)
		}
		var got map[string]any
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]any{"kind": "intrusion", "site": "home", "camera": "cam1", "sensor": "pir-1",
			"event_id": "ev1", "title": "Intrusion at home", "body": "Motion near cam1", "priority": 70.0,
			"time": ev1.Time.Format(time.RFC3339Nano), "url": "https://vigil.example/events/ev1"} {
			if got[k] != v {
				t.Errorf("webhook body %s = %v, want %v", k, got[k], v)
			}
		}
		if len(got) != 10 {
			t.Errorf("webhook body has %d fields, want 10: %s", len(got), r.Body)
		}
	})

	t.Run("ntfy gets the body and its headers", func(t *testing.T) {
		r := ntfy.requests("")[0]
		title, err := new(mime.WordDecoder).DecodeHeader(r.Header.Get("Title"))
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{"Priority": "4", "Tags": "rotating_light",
			"Click": "https://vigil.example/events/ev1", "Authorization": "Bearer " + ntfyToken} {
			if got := r.Header.Get(k); got != want {
				t.Errorf("ntfy %s = %q, want %q", k, got, want)
			}
		}
		if title != "Intrusion at home" || string(r.Body) != "Motion near cam1" || r.Path != "/vigil-alerts" {
			t.Errorf("ntfy got title %q body %q at %s", title, r.Body, r.Path)
		}
	})

	t.Run("a second event of the camera within the cooldown is held back", func(t *testing.T) {
		e.clock.Add(cooldown - time.Millisecond)
		e.n.Notify(intrusion(e, "ev2", "cam1", 70))
		testkit.WaitFor(t, 2*time.Second, "two cooldown suppressions", func() bool {
			return metricIs(e.reg, "vigil_notifications_suppressed_total", `vigil_notifications_suppressed_total{reason="cooldown"} 2`) == nil
		})
		if hooks.count("") != 1 || ntfy.count("") != 1 {
			t.Errorf("during the cooldown: %d webhook and %d ntfy requests, want 1 each", hooks.count(""), ntfy.count(""))
		}
	})

	t.Run("another camera is not in that cooldown", func(t *testing.T) {
		e.n.Notify(intrusion(e, "ev3", "cam2", 70))
		testkit.WaitFor(t, 2*time.Second, "cam2's notifications", both(2))
	})

	t.Run("after the cooldown the camera notifies again", func(t *testing.T) {
		e.clock.Add(time.Millisecond)
		e.n.Notify(intrusion(e, "ev4", "cam1", 70))
		testkit.WaitFor(t, 2*time.Second, "the notifications after the cooldown", both(3))
		var ids []string
		for _, r := range hooks.requests("") {
			ids = append(ids, r.Header.Get(notify.HeaderDelivery))
		}
		if uniq := slices.Compact(slices.Sorted(slices.Values(ids))); len(uniq) != 3 || uniq[0] == "" {
			t.Errorf("X-Vigil-Delivery IDs %q, want 3 distinct", ids)
		}
	})

	testkit.WaitFor(t, 2*time.Second, "6 deliveries counted", func() bool {
		return metricIs(e.reg, "vigil_notifications_total",
			`vigil_notifications_total{kind="ntfy",result="ok"} 3`,
			`vigil_notifications_total{kind="webhook",result="ok"} 3`) == nil
	})
	text, err := testutil.CollectAndFormat(e.reg, expfmt.TypeTextPlain, "vigil_notification_delivery_seconds")
	if err != nil || !strings.Contains(string(text), "\n"+`vigil_notification_delivery_seconds_count{kind="webhook"} 3`+"\n") {
		t.Errorf("want 3 webhook latency samples (%v):\n%s", err, text)
	}
	e.assertNoSecrets(t, hookSecret, ntfyToken)
}

func TestFailedDeliveriesAreRetriedAndLogged(t *testing.T) {
	rc := newReceiver(t, func(n int, r request) int {
		switch r.Path {
		case "/flaky":
			if n == 1 {
				return http.StatusInternalServerError
			}
			return http.StatusNoContent
		case "/down":
			return http.StatusServiceUnavailable
		case "/bad":
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()

	e := newEnv(t, nil, notify.Options{})
	flaky := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "flaky", Enabled: true, URL: rc.URL + "/flaky"})
	down := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "down", Enabled: true, URL: rc.URL + "/down"})
	bad := e.addChannel(t, notify.Channel{Kind: notify.ChannelNtfy, Name: "bad", Enabled: true, URL: rc.URL + "/bad"})
	gone := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "unreachable", Enabled: true,
		URL: "http://" + closedAddr + "/hook/token-in-path"})

	e.n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "Disk almost full", Body: "95% used", Priority: 60})
	logged := func(id string) func() bool { return func() bool { return len(e.deliveries(t, id)) == 1 } }
	for _, id := range []string{flaky, down, bad, gone} {
		testkit.WaitFor(t, 5*time.Second, "a delivery log entry", logged(id))
	}

	t.Run("a 500 then a success is one delivery in two attempts", func(t *testing.T) {
		d := e.deliveries(t, flaky)[0]
		if !d.OK || d.Attempts != 2 || d.Error != "" || d.Title != "Disk almost full" {
			t.Errorf("delivery = %+v, want ok after 2 attempts", d)
		}
		reqs := rc.requests("/flaky")
		if len(reqs) != 2 || reqs[0].Header.Get(notify.HeaderDelivery) != reqs[1].Header.Get(notify.HeaderDelivery) {
			t.Errorf("%d requests; a retry must keep X-Vigil-Delivery", len(reqs))
		}
	})
	t.Run("a receiver that always fails gets every attempt", func(t *testing.T) {
		d := e.deliveries(t, down)[0]
		if d.OK || d.Attempts != 4 || !strings.Contains(d.Error, "503") || rc.count("/down") != 4 {
			t.Errorf("delivery = %+v after %d requests, want failed after 4 attempts", d, rc.count("/down"))
		}
	})
	t.Run("a 400 is not retried", func(t *testing.T) {
		d := e.deliveries(t, bad)[0]
		if d.OK || d.Attempts != 1 || !strings.Contains(d.Error, "400") || rc.count("/bad") != 1 {
			t.Errorf("delivery = %+v after %d requests, want failed after 1 attempt", d, rc.count("/bad"))
		}
	})
	t.Run("a connection error does not show the URL", func(t *testing.T) {
		d := e.deliveries(t, gone)[0]
		if d.OK || d.Attempts != 4 || strings.Contains(d.Error, "token-in-path") || !strings.Contains(d.Error, "refused") {
			t.Errorf("delivery = %+v, want failed after 4 attempts, connection refused, no URL", d)
		}
	})
	if err := metricIs(e.reg, "vigil_notifications_total",
		`vigil_notifications_total{kind="ntfy",result="failed"} 1`,
		`vigil_notifications_total{kind="webhook",result="failed"} 2`,
		`vigil_notifications_total{kind="webhook",result="ok"} 1`); err != nil {
		t.Errorf("want 1 ok and 3 failed: %v", err)
	}
	e.assertNoSecrets(t, "token-in-path")
}

func TestCloseAbandonsRetries(t *testing.T) {
	rc := newReceiver(t, func(int, request) int { return http.StatusBadGateway })
	e := newEnv(t, nil, notify.Options{Retry: []time.Duration{time.Hour}})
	id := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "down", Enabled: true, URL: rc.URL})
	e.n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "Broker down", Priority: 80})
	testkit.WaitFor(t, 2*time.Second, "the first attempt", func() bool { return rc.count("") == 1 })

	done := make(chan error)
	go func() { done <- e.n.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the retry")
	}
	ds := e.deliveries(t, id)
	if len(ds) != 1 || ds[0].OK || ds[0].Attempts != 1 || !strings.Contains(ds[0].Error, "abandoned at shutdown") {
		t.Errorf("deliveries after Close = %+v, want one failed, abandoned", ds)
	}
	e.n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "after close"}) // neither blocks nor panics
}

func TestChannelRulesChooseWhatIsSent(t *testing.T) {
	rc := newReceiver(t, nil)
	e := newEnv(t, nil, notify.Options{})
	ch := func(name string, c notify.Channel) string {
		c.Kind, c.Name, c.URL, c.Cooldown = notify.ChannelWebhook, name, rc.URL+"/"+name, -1
		if name != "disabled" {
			c.Enabled = true
		}
		return e.addChannel(t, c)
	}
	ids := map[string]string{
		"min50":       ch("min50", notify.Channel{MinPriority: 50}),
		"quiet":       ch("quiet", notify.Channel{QuietHours: "22:00-07:00"}),
		"barn":        ch("barn", notify.Channel{Site: "barn"}),
		"alerts-only": ch("alerts-only", notify.Channel{Kinds: []string{notify.KindAlert}}),
		"disabled":    ch("disabled", notify.Channel{}),
	}
	day := e.clock.Now()
	e.clock.Set(time.Date(day.Year(), day.Month(), day.Day(), 23, 30, 0, 0, time.Local))
	send := func(title, kind, site string, priority int) {
		e.n.Notify(notify.Notification{Kind: kind, Site: site, Camera: "cam1", Title: title, Priority: priority})
	}
	send("1 home p40", notify.KindIntrusion, "home", 40)
	send("2 home p95", notify.KindIntrusion, "home", 95) // through quiet hours
	send("3 system alert p10", notify.KindAlert, "", 10) // system-wide: every site's channels
	send("4 barn p60", notify.KindIntrusion, "barn", 60)
	e.clock.Set(time.Date(day.Year(), day.Month(), day.Day(), 7, 0, 0, 0, time.Local)) // quiet hours end at 07:00
	send("5 home p10 at 07:00", notify.KindIntrusion, "home", 10)

	// The dispatcher takes notifications in order: once the last is
	// delivered, every earlier one was dispatched; Close waits for their
	// deliveries, which are then all in the log.
	testkit.WaitFor(t, 2*time.Second, "the last notification", func() bool { return rc.count("/quiet") == 2 })
	e.n.Close()
	want := map[string][]string{
		"min50":       {"2 home p95", "4 barn p60"},
		"quiet":       {"2 home p95", "5 home p10 at 07:00"},
		"barn":        {"3 system alert p10", "4 barn p60"},
		"alerts-only": {"3 system alert p10"},
		"disabled":    nil,
	}
	for name, titles := range want {
		var got []string
		for _, d := range e.deliveries(t, ids[name]) {
			got = append(got, d.Title)
		}
		slices.Sort(got)
		if !slices.Equal(got, titles) {
			t.Errorf("channel %s got %q, want %q", name, got, titles)
		}
	}
	if err := metricIs(e.reg, "vigil_notifications_suppressed_total", // none for cooldown
		`vigil_notifications_suppressed_total{reason="min_priority"} 3`,
		`vigil_notifications_suppressed_total{reason="quiet_hours"} 3`); err != nil {
		t.Error(err)
	}
}

// publisher records MQTT publications.
type publisher struct {
	mu   sync.Mutex
	msgs []published
}

type published struct {
	topic   string
	payload []byte
	retain  bool
	qos     byte
}

func (p *publisher) Publish(topic string, payload []byte, retain bool, qos byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, published{topic, payload, retain, qos})
	return nil
}

func (p *publisher) published() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.msgs)
}

func TestMQTTChannelPublishesOnTheSiteAlertsTopic(t *testing.T) {
	pub := &publisher{}
	e := newEnv(t, pub, notify.Options{})
	e.addChannel(t, notify.Channel{Kind: notify.ChannelMQTT, Name: "mqtt", Enabled: true, Cooldown: -1})
	e.n.Notify(intrusion(e, "ev1", "cam1", 70))
	testkit.WaitFor(t, 2*time.Second, "the intrusion's publication", func() bool { return len(pub.published()) == 1 })
	e.n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "Agent down", Priority: 80, URL: "https://elsewhere.example/x"})
	testkit.WaitFor(t, 2*time.Second, "the alert's publication", func() bool { return len(pub.published()) == 2 })

	msgs := pub.published()
	var got []notify.Notification
	for i, want := range []string{"vigil/home/alerts", "vigil/system/alerts"} {
		m := msgs[i]
		if m.topic != want || m.retain || m.qos != 1 {
			t.Errorf("publication %d: topic %s retain %v qos %d, want %s, not retained, QoS 1", i, m.topic, m.retain, m.qos, want)
		}
		var n notify.Notification
		if err := json.Unmarshal(m.payload, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if got[0].EventID != "ev1" || got[0].Camera != "cam1" || got[0].URL != "https://vigil.example/events/ev1" {
		t.Errorf("intrusion payload = %+v", got[0])
	}
	if got[1].Title != "Agent down" || got[1].Site != "" || got[1].URL != "https://elsewhere.example/x" || got[1].Time.IsZero() {
		t.Errorf("alert payload = %+v (an absolute URL stays, a zero time becomes now)", got[1])
	}
}

func TestTestSendsOnceIgnoringRules(t *testing.T) {
	rc := newReceiver(t, func(_ int, r request) int {
		if r.Path == "/broken" {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	e := newEnv(t, nil, notify.Options{})
	ctx := context.Background()
	// Disabled, in quiet hours all day long, above every priority and in a
	// long cooldown: Test sends anyway.
	id := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "hook", URL: rc.URL + "/hook",
		MinPriority: 100, QuietHours: "00:00-23:59", Cooldown: time.Hour})
	for range 2 {
		if err := e.n.Test(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if rc.count("/hook") != 2 {
		t.Errorf("%d test requests, want 2", rc.count("/hook"))
	}
	if ds := e.deliveries(t, id); len(ds) != 2 || !ds[0].OK || ds[0].Title != "Vigil test notification" {
		t.Errorf("deliveries = %+v", ds)
	}

	broken := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "broken", Enabled: true, URL: rc.URL + "/broken"})
	err := e.n.Test(ctx, broken)
	if err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("Test(broken) = %v, want the 500", err)
	}
	if ds := e.deliveries(t, broken); len(ds) != 1 || ds[0].OK || ds[0].Attempts != 1 || ds[0].Error != err.Error() {
		t.Errorf("deliveries = %+v, want one failed attempt", ds)
	}
	if err := e.n.Test(ctx, "nope"); vigil.ErrorCode(err) != vigil.ENotFound {
		t.Errorf("Test(nope) = %v, want not found", err)
	}
}

func TestNotifyNeverBlocks(t *testing.T) {
	e := newEnv(t, nil, notify.Options{})
	reg := prometheus.NewRegistry()
	// Not started: nothing takes from the queue.
	n, err := notify.New(e.st, nil, nil, reg, notify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			n.Notify(notify.Notification{Kind: notify.KindAlert, Title: fmt.Sprint(i)})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "after Close"})
	// 744 dropped on a full queue, the 256 queued at Close, 1 after it.
	if err := metricIs(reg, "vigil_notifications_dropped_total", "vigil_notifications_dropped_total 1001"); err != nil {
		t.Error(err)
	}
}
