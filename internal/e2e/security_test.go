package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/store"
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
		rec, err := ta.RunAudit(context.Background(), "manual")
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
		rec, err := ta.RunAudit(context.Background(), "manual")
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
		if _, err := ta.RunAudit(context.Background(), "manual"); err != nil {
			t.Fatal(err)
		}
		type alert struct {
			ID, Level, Title string
			Since            time.Time
		}
		weak := func(ta *testApp) *alert {
			var alerts []alert
			ta.api(t, "GET", "/api/v1/alerts", "admin", adminPassword, &alerts)
			for _, a := range alerts {
				if strings.HasPrefix(a.ID, "audit:weak-credentials:") && a.Level == "critical" {
					return &a
				}
			}
			t.Fatalf("no critical alert for the weak password: %+v", alerts)
			return nil
		}
		before := weak(ta)
		waitFor(t, 5*time.Second, "the alert's notification", func() bool {
			for _, r := range hook.ok() {
				if strings.Contains(string(r.body), "Default or weak credentials work") {
					return true
				}
			}
			return false
		})
		// A second audit with the same finding notifies nothing new.
		n := len(hook.ok())
		if _, err := ta.RunAudit(context.Background(), "manual"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
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
		time.Sleep(time.Second)
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
	waitFor(t, 5*time.Second, "site-a up", func() bool { s := watchStatus(); return s.Up && s.Probes > 0 })
	m.Stop()
	stopped := time.Now()
	waitFor(t, 5*time.Second, "the outage alert", alerted)
	t.Logf("outage alert %v after the broker stopped", time.Since(stopped).Round(10*time.Millisecond))
	waitFor(t, 5*time.Second, "the outage notification", func() bool {
		for _, r := range hook.ok() {
			if strings.Contains(string(r.body), "Broker site-a is down") {
				return true
			}
		}
		return false
	})
	m.Restart()
	waitFor(t, 5*time.Second, "the recovery", func() bool {
		s := watchStatus()
		return s.Up && len(s.Outages) == 1 && s.Outages[0].End != nil && !alerted()
	})
	time.Sleep(500 * time.Millisecond)
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
	waitFor(t, 5*time.Second, "the address blocked", func() bool { return slices.Contains(blocked(), "127.0.0.1") })
	waitFor(t, 5*time.Second, "the notification", func() bool { return notes() == 1 })
	time.Sleep(time.Second) // the next alert checks see the same block
	if n := notes(); n != 1 {
		t.Errorf("%d notifications for one block, want 1", n)
	}
	for _, key := range blocked() {
		if code := ta.apiJSON(t, "DELETE", "/api/v1/mqtt/blocks/"+key, nil, nil); code != 204 && code != 200 {
			t.Fatalf("unblock %s: %d", key, code)
		}
	}
	waitFor(t, 10*time.Second, "the alert cleared", func() bool {
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
	waitFor(t, 5*time.Second, "the second block's notification", func() bool { return notes() == 2 })
}
