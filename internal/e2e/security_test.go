package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
)

// vigil up audits itself. In local mode the report says plainly that
// anonymous access is allowed on loopback only, and there is nothing to
// warn about; in production configuration (listeners on 0.0.0.0, TLS,
// users) nothing is above low either; a weak password is a critical
// finding, shown as an alert (the overview's banner) and notified once:
// not again by the next audit, nor after a restart.
func TestSelfAudit(t *testing.T) {
	t.Run("local mode", func(t *testing.T) {
		ta := startApp(t, nil)
		start := time.Now()
		rec, err := ta.Auditor.Run(context.Background(), "manual")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("self-audit in local mode: grade %s in %v", rec.Grade, time.Since(start).Round(time.Millisecond))
		r := rec.Report
		for _, f := range r.Findings {
			if f.Severity.String() != "info" && f.Severity.String() != "low" {
				t.Errorf("local mode: %s %s: %s", f.Severity, f.ID, f.Title)
			}
			if f.ID == "anonymous-access" && (!strings.Contains(f.Title, "loopback only") || !strings.Contains(f.Remediation, "leave local mode")) {
				t.Errorf("local mode is not explained plainly: %+v", f)
			}
		}
		var list []store.AuditSummary
		ta.api(t, "GET", "/api/v1/audits", "admin", adminPassword, &list)
		var latest store.AuditRecord
		ta.api(t, "GET", "/api/v1/audits/latest", "admin", adminPassword, &latest)
		if len(list) != 1 || latest.ID != list[0].ID || latest.Report == nil || len(latest.Report.Findings) != len(r.Findings) {
			t.Errorf("API: %+v / %+v", list, latest.AuditSummary)
		}
		var alerts []struct{ ID string }
		ta.api(t, "GET", "/api/v1/alerts", "admin", adminPassword, &alerts)
		for _, a := range alerts {
			if strings.HasPrefix(a.ID, "audit:") {
				t.Errorf("local mode raised %s", a.ID)
			}
		}
	})

	t.Run("production, then a weak password", func(t *testing.T) {
		cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
		ta := startApp(t, func(c *conf.Config) {
			c.MQTT.Listen, c.MQTT.WSListen = "0.0.0.0:0", ""
			c.MQTT.TLSListen, c.MQTT.TLSCert, c.MQTT.TLSKey = "0.0.0.0:0", cert.CertFile, cert.KeyFile
			allowLocalReceivers(c)
		})
		hook := newReceiver(t, 0)
		ta.apiJSON(t, "POST", "/api/v1/notify/channels", map[string]any{"kind": "webhook", "name": "ops", "url": hook.srv.URL, "kinds": []string{"alert"}, "cooldown_s": 0}, nil)
		start := time.Now()
		rec, err := ta.Auditor.Run(context.Background(), "manual")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("self-audit in production: grade %s in %v", rec.Grade, time.Since(start).Round(time.Millisecond))
		for _, f := range rec.Report.Findings {
			if s := f.Severity.String(); s != "info" && s != "low" {
				t.Errorf("production: %s %s: %s\n%s", s, f.ID, f.Title, f.Evidence)
			}
		}

		addUser(t, ta, "homeassistant", users.RoleDevice, "homeassistant", nil, nil)
		type alert struct {
			ID, Level, Title string
			Since            time.Time
		}
		find := func(ta *testApp) (*alert, []alert) {
			var alerts []alert
			ta.api(t, "GET", "/api/v1/alerts", "admin", adminPassword, &alerts)
			for _, a := range alerts {
				if strings.HasPrefix(a.ID, "audit:weak-credentials:") && a.Level == "critical" {
					return &a, alerts
				}
			}
			return nil, alerts
		}
		weak := func(ta *testApp) *alert {
			a, alerts := find(ta)
			if a == nil {
				t.Fatalf("no critical alert for the weak password: %+v", alerts)
			}
			return a
		}
		// A guess that times out (3 s) counts as wrong: on a CI machine
		// busy with -race, the right one can; an audit is run again then.
		for range 3 {
			if _, err := ta.Auditor.Run(context.Background(), "manual"); err != nil {
				t.Fatal(err)
			}
			if a, _ := find(ta); a != nil {
				break
			}
		}
		before := weak(ta)
		testkit.WaitFor(t, 5*time.Second, "the alert's notification", func() bool {
			for _, r := range hook.ok() {
				if strings.Contains(string(r.body), "Default or weak credentials work") {
					return true
				}
			}
			return false
		})
		// A second audit with the same finding notifies nothing new.
		n := len(hook.ok())
		if _, err := ta.Auditor.Run(context.Background(), "manual"); err != nil {
			t.Fatal(err)
		}
		ta.settleAlerts(t)
		if got := len(hook.ok()); got != n {
			t.Errorf("the same finding was notified again (%d notifications, had %d)", got, n)
		}
		// Nor after a restart: the alert holds from the start, since when
		// it first held, and is not notified again.
		ta.Close()
		ta = openApp(t, ta.cfg, adminPassword)
		if after := weak(ta); !after.Since.Equal(before.Since) {
			t.Errorf("after a restart the alert holds since %v, want %v", after.Since, before.Since)
		}
		ta.settleAlerts(t)
		if got := len(hook.ok()); got != n {
			t.Errorf("a restart notified the finding again (%d notifications, had %d)", got, n)
		}
	})
}

// vigil up watches a configured broker: an outage becomes an alert and
// one notification; the recovery clears the alert without notifying.
func TestVigilUpWatchesABroker(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	ta := startApp(t, func(c *conf.Config) {
		c.Watch.Targets = []conf.WatchTarget{{Name: "site-a", URL: fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)}}
		c.Watch.Interval, c.Watch.Timeout = time.Second, 500*time.Millisecond
		allowLocalReceivers(c)
	})
	hook := newReceiver(t, 0)
	ta.apiJSON(t, "POST", "/api/v1/notify/channels", map[string]any{"kind": "webhook", "name": "ops", "url": hook.srv.URL, "cooldown_s": 0}, nil)
	type status struct {
		Target  string
		Up      bool
		Probes  int
		Outages []struct{ End *time.Time }
	}
	watchStatus := func() status {
		var st []status
		ta.api(t, "GET", "/api/v1/watch", "admin", adminPassword, &st)
		if len(st) != 1 {
			t.Fatalf("watch status %+v", st)
		}
		return st[0]
	}
	alerted := func() bool {
		var alerts []struct{ ID string }
		ta.api(t, "GET", "/api/v1/alerts", "admin", adminPassword, &alerts)
		for _, a := range alerts {
			if a.ID == "watch:site-a" {
				return true
			}
		}
		return false
	}
	testkit.WaitFor(t, 5*time.Second, "site-a up", func() bool { s := watchStatus(); return s.Up && s.Probes > 0 })
	m.Stop()
	stopped := time.Now()
	testkit.WaitFor(t, 5*time.Second, "the outage alert", alerted)
	t.Logf("outage alert %v after the broker stopped", time.Since(stopped).Round(10*time.Millisecond))
	testkit.WaitFor(t, 5*time.Second, "the outage notification", func() bool {
		for _, r := range hook.ok() {
			if strings.Contains(string(r.body), "Broker site-a is down") {
				return true
			}
		}
		return false
	})
	m.Restart()
	testkit.WaitFor(t, 5*time.Second, "the recovery", func() bool {
		s := watchStatus()
		return s.Up && len(s.Outages) == 1 && s.Outages[0].End != nil && !alerted()
	})
	ta.settleAlerts(t)
	down := 0
	for _, r := range hook.ok() {
		if strings.Contains(string(r.body), "site-a") {
			down++
		}
	}
	if down != 1 {
		t.Errorf("%d notifications about site-a, want exactly 1 (the outage)", down)
	}
}

// Blocked MQTT clients are one alert, notified when the first block
// starts however many follow; lifting every block clears it, and the next
// block is notified again.
func TestBlocksAreNotifiedOncePerEpisode(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		c.MQTT.Listen, c.MQTT.WSListen = "0.0.0.0:0", ""
		c.MQTT.BlockExempt, c.MQTT.BlockAuthFailures = nil, 2
		allowLocalReceivers(c)
	})
	hook := newReceiver(t, 0)
	ta.apiJSON(t, "POST", "/api/v1/notify/channels", map[string]any{"kind": "webhook", "name": "ops", "url": hook.srv.URL, "kinds": []string{"alert"}, "cooldown_s": 0}, nil)
	addr := "127.0.0.1:" + ta.mqttPort()
	guess := func(client string) {
		for range 3 {
			if c, _, err := mqttConnect(t, addr, client, "admin", "wrong-password"); err == nil {
				c.Disconnect(&paho.Disconnect{})
				t.Fatal("a wrong password was accepted")
			}
		}
	}
	blocked := func() []string {
		var list []struct{ Key string }
		ta.api(t, "GET", "/api/v1/mqtt/blocks", "admin", adminPassword, &list)
		var keys []string
		for _, b := range list {
			keys = append(keys, b.Key)
		}
		return keys
	}
	notes := func() int {
		n := 0
		for _, r := range hook.ok() {
			if strings.Contains(string(r.body), "MQTT clients or addresses are blocked") {
				n++
			}
		}
		return n
	}
	guess("guesser-1")
	testkit.WaitFor(t, 5*time.Second, "the address blocked", func() bool { return slices.Contains(blocked(), "127.0.0.1") })
	testkit.WaitFor(t, 5*time.Second, "the notification", func() bool { return notes() == 1 })
	ta.settleAlerts(t) // another check sees the same block
	if n := notes(); n != 1 {
		t.Errorf("%d notifications for one block, want 1", n)
	}
	for _, key := range blocked() {
		if code := ta.apiJSON(t, "DELETE", "/api/v1/mqtt/blocks/"+key, nil, nil); code != 204 && code != 200 {
			t.Fatalf("unblock %s: %d", key, code)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the alert cleared", func() bool {
		var alerts []struct{ ID string }
		ta.api(t, "GET", "/api/v1/alerts", "admin", adminPassword, &alerts)
		for _, a := range alerts {
			if a.ID == "blocks" {
				return false
			}
		}
		return true
	})
	guess("guesser-2")
	testkit.WaitFor(t, 5*time.Second, "the second block's notification", func() bool { return notes() == 2 })
}

// Removing a user or changing its role through the API ends its MQTT
// sessions at once: a revoked device does not go on publishing.
func TestRevokingAUserThroughTheAPIEndsItsMQTTSessions(t *testing.T) {
	ta := startApp(t, nil)
	ctx := context.Background()
	for _, name := range []string{"door-1", "door-2"} {
		h, err := users.HashPassword(name+"-password", 4)
		must(t, err)
		pub, sub := users.DefaultACL(users.RoleDevice)
		must(t, ta.Store.CreateUser(ctx, &users.User{Name: name, Role: users.RoleDevice, PasswordHash: h, Publish: pub, Subscribe: sub}))
	}
	d1, ack, err := mqttConnect(t, ta.mqttAddr(), "door-1", "door-1", "door-1-password")
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("door-1: %v %v", ack, err)
	}
	d2, ack, err := mqttConnect(t, ta.mqttAddr(), "door-2", "door-2", "door-2-password")
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("door-2: %v %v", ack, err)
	}

	if code := ta.api(t, "DELETE", "/api/v1/users/door-1", "admin", adminPassword, nil); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	select {
	case <-d1.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the removed user's MQTT session is still open")
	}
	if _, ack, _ := mqttConnect(t, ta.mqttAddr(), "door-1", "door-1", "door-1-password"); ack == nil || ack.ReasonCode == 0 {
		t.Errorf("the removed user logged in again: %v", ack)
	}

	body := strings.NewReader(`{"role": "viewer"}`)
	req, _ := http.NewRequest("PATCH", "http://"+ta.HTTP.Addr().String()+"/api/v1/users/door-2", body)
	req.SetBasicAuth("admin", adminPassword)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PATCH role: %d", resp.StatusCode)
	}
	select {
	case <-d2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the user whose role changed kept its MQTT session")
	}
	// Logged in again, it has the viewer's rights: it may no longer publish.
	c, ack, err := mqttConnect(t, ta.mqttAddr(), "door-2", "door-2", "door-2-password")
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("door-2 as a viewer: %v %v", ack, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if pr, err := c.Publish(cctx, &paho.Publish{Topic: "vigil/home/door-2/telemetry", QoS: 1, Payload: []byte(`{"value": 1}`)}); err == nil && pr.ReasonCode == 0 {
		t.Error("the device made a viewer may still publish")
	}
}

// mqttConnectFrom connects paho (MQTT 5) from a local address.
func mqttConnectFrom(t *testing.T, from, addr, clientID, user, password string) *paho.Connack {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	must(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, _ := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
	if ack == nil {
		t.Fatalf("no CONNACK for %s from %s", user, from)
	}
	if ack.ReasonCode == 0 {
		c.Disconnect(&paho.Disconnect{})
	}
	return ack
}

// httpLoginFrom calls the API with Basic credentials from a local address.
func httpLoginFrom(t *testing.T, ta *testApp, from, user, password string) int {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+ta.HTTP.Addr().String()+"/api/v1/system", nil)
	req.SetBasicAuth(user, password)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	must(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// Password guesses draw on one budget whatever they come through: an
// address the web login refused is refused over MQTT too, and a username
// guessed over MQTT from many addresses is locked for the web as well.
func TestPasswordGuessesShareOneBudgetAcrossHTTPAndMQTT(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { c.HTTP.Listen, c.MQTT.Listen, c.MQTT.WSListen = "0.0.0.0:0", "0.0.0.0:0", "" })
	addUser(t, ta, "door", users.RoleAdmin, "door-password-1", nil, nil)
	addUser(t, ta, "gate", users.RoleAdmin, "gate-password-1", nil, nil)
	mqtt := "127.0.0.1:" + ta.mqttPort()

	t.Run("an address the web login refused cannot guess over MQTT", func(t *testing.T) {
		for range 5 {
			if code := httpLoginFrom(t, ta, "127.0.0.2", "door", "wrong"); code != 401 {
				t.Fatalf("wrong password over HTTP: %d", code)
			}
		}
		if code := httpLoginFrom(t, ta, "127.0.0.2", "door", "wrong"); code != 429 {
			t.Fatalf("6th wrong password over HTTP: %d, want 429", code)
		}
		// Even the right password is not tried from there now.
		if ack := mqttConnectFrom(t, "127.0.0.2", mqtt, "d1", "door", "door-password-1"); ack.ReasonCode != 0x9F {
			t.Errorf("MQTT from the refused address: CONNACK %#x, want 0x9F (connection rate exceeded)", ack.ReasonCode)
		}
		// Another address is not concerned.
		if ack := mqttConnectFrom(t, "127.0.0.3", mqtt, "d2", "door", "door-password-1"); ack.ReasonCode != 0 {
			t.Errorf("MQTT from another address: CONNACK %#x", ack.ReasonCode)
		}
	})
	t.Run("a username guessed over MQTT from many addresses is locked for the web too", func(t *testing.T) {
		for i := range 20 {
			from := fmt.Sprintf("127.0.1.%d", i+1) // 1 guess per address: no address reaches its limit
			if ack := mqttConnectFrom(t, from, mqtt, fmt.Sprintf("g%d", i), "gate", "wrong"); ack.ReasonCode != 0x86 {
				t.Fatalf("guess %d: CONNACK %#x", i, ack.ReasonCode)
			}
		}
		if ack := mqttConnectFrom(t, "127.0.2.1", mqtt, "g21", "gate", "wrong"); ack.ReasonCode != 0x9F {
			t.Errorf("21st guess over MQTT: CONNACK %#x, want 0x9F", ack.ReasonCode)
		}
		if code := httpLoginFrom(t, ta, "127.0.2.2", "gate", "gate-password-1"); code != 429 {
			t.Errorf("the web login of the guessed user: %d, want 429", code)
		}
	})
}

// The self-audit's own probes are not attacks: they lock nobody out, and a
// start logs one line about them rather than a refusal per guess, while a
// real refusal stays visible.
func TestTheSelfAuditIsQuietAndLocksNobodyOut(t *testing.T) {
	ta := startApp(t, nil)
	rec, err := ta.Auditor.Run(context.Background(), "manual")
	must(t, err)
	logs := ta.logs.String()
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "level=DEBUG") {
			continue
		}
		if strings.Contains(line, "client refused") || strings.Contains(line, "error processing packet") || strings.Contains(line, "exempt address") {
			t.Errorf("the self-audit's probe was logged as news: %s", line)
		}
	}
	if !regexp.MustCompile(`msg=self-audit .*probes_refused=[1-9]`).MatchString(logs) {
		t.Errorf("no summary line of the refused probes in:\n%s", logs)
	}
	t.Logf("self-audit grade %s; summary: %s", rec.Grade, regexp.MustCompile(`msg=self-audit [^\n]*`).FindString(logs))
	// The weak-credentials check guessed admin's password many times; the
	// admin can still log in.
	if code := ta.api(t, "GET", "/api/v1/system", "admin", adminPassword, nil); code != 200 {
		t.Errorf("admin after the self-audit: %d", code)
	}
	// A real wrong password is still news.
	if ack := mqttConnectFrom(t, "127.0.0.1", ta.mqttAddr(), "intruder", "admin", "guess"); ack.ReasonCode == 0 {
		t.Fatal("a wrong password was accepted")
	}
	testkit.WaitFor(t, 5*time.Second, "the real refusal in the log", func() bool {
		return strings.Contains(ta.logs.String(), `level=INFO msg="client refused: wrong username or password"`)
	})
}

// A subscriber that does not keep up loses messages, and says so: the
// alert names it and how many it lost.
func TestASubscriberThatDoesNotKeepUpIsNamedInAnAlert(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) { c.MQTT.MaxQueuedMessages = 64 })
	// A dashboard that reads nothing, with a small receive buffer.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", ta.mqttAddr())
	must(t, err)
	defer conn.Close()
	sub := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = sub.Connect(ctx, &paho.Connect{ClientID: "wall-dashboard", KeepAlive: 60, CleanStart: true})
	must(t, err)
	_, err = sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vigil-audit/#", QoS: 0}}})
	must(t, err)
	// Stop reading: paho's reader is stuck behind a handler that blocks.
	stuck := make(chan struct{})
	defer close(stuck)
	sub.AddOnPublishReceived(func(paho.PublishReceived) (bool, error) { <-stuck; return true, nil })

	pub, ack, err := mqttConnect(t, ta.mqttAddr(), "camera-feed", "", "")
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("publisher: %v %v", ack, err)
	}
	payload := make([]byte, 8<<10)
	for range 2000 { // 16 MB at QoS 0: far more than the dashboard's queue and socket hold
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "vigil-audit/wall", Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	var alerts []struct{ ID, Title, Detail string }
	testkit.WaitFor(t, 15*time.Second, "the slow subscriber alert", func() bool {
		alerts = nil
		ta.api(t, "GET", "/api/v1/alerts", "admin", adminPassword, &alerts)
		for _, a := range alerts {
			if a.ID == "slow_subscribers" && strings.Contains(a.Detail, "wall-dashboard") && strings.Contains(a.Detail, "dropped") {
				t.Logf("alert: %s: %s", a.Title, a.Detail)
				return true
			}
		}
		return false
	})
}
