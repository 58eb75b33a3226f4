package audit

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// QoS 0, 1 and 2 round trips work on Mosquitto and on Vigil's broker, and
// the latency run reports its figures without a finding on loopback.
func TestQoSAndLatencyOnRealBrokers(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	vb := startVigil(t, false, nil)
	for name, target := range map[string]string{"mosquitto": brokerURL("mqtt", m.Port), "vigil": brokerURL("mqtt", vb.Port)} {
		t.Run(name, func(t *testing.T) {
			r := audit(t, target, Options{LocalMode: name == "vigil"}, "anonymous-access", "qos-support", "latency")
			q, ok := finding(r, "qos-support")
			if !ok || q.Severity != Info || !strings.Contains(q.Evidence, "QoS 2 delivered at QoS 2") {
				t.Errorf("qos-support: %+v\n%s", q, describe(r))
			}
			l, ok := finding(r, "latency")
			if !ok || l.Severity != Info || l.Title != "Round trips work at QoS 0, 1 and 2 without loss" {
				t.Errorf("latency: %+v\n%s", l, describe(r))
			}
			for qos := range 3 {
				m := regexp.MustCompile(fmt.Sprintf(`(?m)^QoS %d: \d+ messages, .*, (\d+) lost$`, qos)).FindStringSubmatch(l.Evidence)
				if m == nil || m[1] != "0" {
					t.Errorf("latency at QoS %d: want a line with 0 lost in\n%s", qos, l.Evidence)
				}
			}
			t.Logf("%s: %s", name, l.Evidence)
		})
	}
}

// The latency finding names the QoS levels it measured and those it did
// not, and judges loss by level.
func TestLatencyFindingSaysWhatWasMeasured(t *testing.T) {
	ms := func(n int) []time.Duration { return []time.Duration{time.Duration(n) * time.Millisecond} }
	tests := []struct {
		name   string
		levels []latencyLevel
		sev    Severity
		title  string
		lines  []string
	}{
		{
			name:   "every level without loss",
			levels: []latencyLevel{{qos: 0, rtts: ms(1)}, {qos: 1, rtts: ms(1)}, {qos: 2, rtts: ms(2)}},
			title:  "Round trips work at QoS 0, 1 and 2 without loss",
			lines:  []string{"QoS 0: 1 messages, p50 1ms, p99 1ms, 0 lost", "QoS 2: 1 messages, p50 2ms, p99 2ms, 0 lost"},
		},
		{
			name:   "a level that got no time is named as not measured",
			levels: []latencyLevel{{qos: 0, rtts: ms(1)}, {qos: 1, rtts: ms(1)}, {qos: 2}},
			title:  "Round trips work at QoS 0 and 1 without loss; QoS 2 not measured",
			lines:  []string{"QoS 2: not measured"},
		},
		{
			name:   "loss at QoS 0 only is said, at info",
			levels: []latencyLevel{{qos: 0, rtts: ms(1), lost: 10}, {qos: 1, rtts: ms(1)}, {qos: 2, rtts: ms(1)}},
			title:  "Round trips work at QoS 0, 1 and 2; some QoS 0 messages were lost (QoS 0 may lose them)",
			lines:  []string{"QoS 0: 11 messages, p50 1ms, p99 1ms, 10 lost"},
		},
		{
			name:   "loss at QoS 1 is medium",
			levels: []latencyLevel{{qos: 0, rtts: ms(1)}, {qos: 1, rtts: ms(1), lost: 1}, {qos: 2}},
			sev:    Medium,
			title:  "Messages are slow or lost; QoS 2 not measured",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := latencyFindings(tt.levels)
			if err != nil || len(fs) != 1 {
				t.Fatalf("%v %v", fs, err)
			}
			if fs[0].Severity != tt.sev || fs[0].Title != tt.title {
				t.Errorf("%s %q, want %s %q", fs[0].Severity, fs[0].Title, tt.sev, tt.title)
			}
			for _, l := range tt.lines {
				if !strings.Contains(fs[0].Evidence, l) {
					t.Errorf("evidence lacks %q:\n%s", l, fs[0].Evidence)
				}
			}
		})
	}
	if _, err := latencyFindings([]latencyLevel{{qos: 0}, {qos: 1}, {qos: 2}}); err == nil {
		t.Error("nothing measured, yet no error")
	}
}

// Nobody can connect: the QoS and latency checks skip, saying why.
func TestQoSSkipsWithoutAnIdentity(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"u": "long-password-1"}})
	r := audit(t, brokerURL("mqtt", m.Port), Options{}, "qos-support", "latency")
	for _, id := range []string{"qos-support", "latency"} {
		if s := status(r, id); s.Status != StatusSkipped || !strings.Contains(s.Note, "no identity") {
			t.Errorf("%s: %+v", id, s)
		}
	}
}

// Two independent brokers: clients can move, but neither messages nor
// sessions follow. A bridge carries messages across, not sessions.
func TestFailoverBetweenBrokers(t *testing.T) {
	a := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	b := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	bridged := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true,
		Extra: fmt.Sprintf("connection to-a\naddress 127.0.0.1:%d\ntopic # both 1\ncleansession true\n", a.Port)})
	run := func(targets ...string) *Report {
		t.Helper()
		rs, err := Run(context.Background(), targets, Options{Checks: []string{"anonymous-access", "failover"}, NoNmap: true, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return rs[0]
	}
	r := run(brokerURL("mqtt", a.Port), brokerURL("mqtt", b.Port))
	if got := ids(r, Info); !slices.Equal(got, []string{"anonymous-access", "failover", "failover"}) {
		t.Errorf("independent brokers: %v\n%s", got, describe(r))
	}
	f, _ := finding(r, "failover")
	if !strings.Contains(f.Evidence, "reconnected in") {
		t.Errorf("no reconnect time: %s", f.Evidence)
	}
	// The bridge needs a moment to connect.
	testkit.WaitFor(t, 10*time.Second, "bridged brokers to give one low finding, persistent sessions", func() bool {
		r = run(brokerURL("mqtt", a.Port), brokerURL("mqtt", bridged.Port))
		var sevs []string
		for _, f := range r.Findings {
			if f.ID == "failover" {
				sevs = append(sevs, f.Severity.String()+" "+f.Title)
			}
		}
		if len(sevs) == 1 && strings.HasPrefix(sevs[0], "low Persistent sessions") {
			return true
		}
		t.Logf("bridged brokers, not yet: %v", sevs)
		return false
	})
	r = run(brokerURL("mqtt", a.Port))
	if s := status(r, "failover"); s.Status != StatusSkipped {
		t.Errorf("one target: failover %+v", s)
	}
}

// Failover as a device whose ACL allows only devices/<user>/#: the check
// tests on a topic the identity may use, a bridge still carries its
// messages across, a pair it cannot connect to is a medium finding even
// among pairs that work, and a pair its ACL leaves no topic on fails the
// check instead of passing for brokers that do not fail over.
func TestFailoverWithACLs(t *testing.T) {
	const pass = "dev1-long-pass"
	acl := "user bridge\ntopic readwrite #\n\npattern readwrite devices/%u/#\n"
	accounts := map[string]string{"dev1": pass, "bridge": "bridge-long-pass"}
	a := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: accounts, ACL: acl})
	bridged := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: accounts, ACL: acl,
		Extra: fmt.Sprintf("connection to-a\naddress 127.0.0.1:%d\nremote_username bridge\nremote_password bridge-long-pass\ntopic # both 1\ncleansession true\n", a.Port)})
	// dev1 is not a user there.
	strange := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"dev2": pass}})
	// dev1 may connect there, but use no topic.
	barren := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: accounts, ACL: "user bridge\ntopic readwrite #\n"})
	run := func(targets ...int) *Report {
		t.Helper()
		var urls []string
		for _, p := range targets {
			urls = append(urls, brokerURL("mqtt", p))
		}
		rs, err := Run(context.Background(), urls, Options{Checks: []string{"failover"}, NoNmap: true, Timeout: 2 * time.Second,
			Username: "dev1", Password: pass})
		if err != nil {
			t.Fatal(err)
		}
		return rs[0]
	}
	failover := func(r *Report) []string {
		var out []string
		for _, f := range r.Findings {
			if f.ID == "failover" {
				out = append(out, f.Severity.String()+" "+f.Title)
			}
		}
		return out
	}
	t.Run("messages of a bridged pair cross on the device's own topic", func(t *testing.T) {
		// The bridge needs a moment to connect.
		var r *Report
		testkit.WaitFor(t, 10*time.Second, "bridged brokers to give one low finding, persistent sessions", func() bool {
			r = run(a.Port, bridged.Port)
			got := failover(r)
			if s := status(r, "failover"); s.Status == StatusFound && len(got) == 1 && strings.HasPrefix(got[0], "low Persistent sessions") {
				return true
			}
			t.Logf("bridged brokers, not yet: %v", got)
			return false
		})
		f, _ := finding(r, "failover")
		if !strings.Contains(f.Evidence, "reached") || strings.Contains(f.Evidence, "reached "+brokerURL("mqtt", bridged.Port)+": false") {
			t.Errorf("evidence: %s", f.Evidence)
		}
	})
	t.Run("a pair the device cannot connect to is medium among pairs that work", func(t *testing.T) {
		r := run(a.Port, bridged.Port, strange.Port)
		got := failover(r)
		if !slices.Contains(got, "medium Clients cannot move between some of these brokers (4 pairs)") {
			t.Errorf("findings %v\n%s", got, describe(r))
		}
		if s := status(r, "failover"); s.Status != StatusFound {
			t.Errorf("failover %+v", s)
		}
	})
	t.Run("a pair whose ACL leaves no topic fails the check, without a finding", func(t *testing.T) {
		r := run(a.Port, barren.Port)
		if got := failover(r); len(got) > 0 {
			t.Errorf("findings %v\n%s", got, describe(r))
		}
		if s := status(r, "failover"); s.Status != StatusError || !strings.Contains(s.Note, "no topic where") {
			t.Errorf("failover %+v", s)
		}
	})
}
