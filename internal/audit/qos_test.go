package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

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
			if !ok || l.Severity != Info || strings.Count(l.Evidence, "0 lost") != 3 {
				t.Errorf("latency: %+v\n%s", l, describe(r))
			}
			t.Logf("%s: %s", name, l.Evidence)
		})
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = run(brokerURL("mqtt", a.Port), brokerURL("mqtt", bridged.Port))
		var sevs []string
		for _, f := range r.Findings {
			if f.ID == "failover" {
				sevs = append(sevs, f.Severity.String()+" "+f.Title)
			}
		}
		if len(sevs) == 1 && strings.HasPrefix(sevs[0], "low Persistent sessions") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridged brokers: %v\n%s", sevs, describe(r))
		}
		time.Sleep(200 * time.Millisecond)
	}
	r = run(brokerURL("mqtt", a.Port))
	if s := status(r, "failover"); s.Status != StatusSkipped {
		t.Errorf("one target: failover %+v", s)
	}
}
