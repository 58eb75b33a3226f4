package audit

import (
	"bufio"
	"bytes"
	"context"
	"maps"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/testpeer"
)

// protocolChecks are the checks of protocol.go and limits.go, in Order.
var protocolChecks = []string{"client-id-takeover", "invalid-topic", "invalid-utf8", "invalid-qos", "max-payload", "slow-connect"}

// verdicts sums up how each check of a report went: the severities of its
// findings ("medium", "medium+low"), or its status ("passed", "skipped",
// "error: ...").
func protocolVerdicts(r *Report) map[string]string {
	out := map[string]string{}
	for _, c := range r.Checks {
		switch c.Status {
		case StatusFound:
			var sev []string
			for _, f := range r.Findings {
				if f.ID == c.ID {
					sev = append(sev, f.Severity.String())
				}
			}
			out[c.ID] = strings.Join(sev, "+")
		case StatusError:
			out[c.ID] = "error: " + c.Note
		default:
			out[c.ID] = c.Status
		}
	}
	return out
}

// Each configuration gets exactly the protocol findings it deserves, with
// evidence that says what the broker did.
func TestProtocolChecksOnRealBrokers(t *testing.T) {
	const alicePass, devPass = "alice-pass-1234", "dev1-pass-1234"
	cases := []struct {
		name   string
		start  func(t *testing.T) (string, Options)
		checks []string // nil: all of protocolChecks
		want   map[string]string
		// evidence holds what each check's findings must show; notes what
		// a skipped check's note must say.
		evidence, notes map[string][]string
	}{
		{
			name: "an open Mosquitto lets anyone take over a client id, takes 16 MiB messages and holds silent connections",
			start: func(t *testing.T) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
				return brokerURL("mqtt", m.Port), Options{}
			},
			want: map[string]string{"client-id-takeover": "medium", "invalid-topic": "passed", "invalid-utf8": "passed",
				"invalid-qos": "passed", "max-payload": "low", "slow-connect": "low"},
			evidence: map[string][]string{
				// Mosquitto 2.0.11 closes the older connection without a DISCONNECT.
				"client-id-takeover": {"as an anonymous client", "the broker closed its connection"},
				"max-payload":        {"PUBLISH QoS 1 of 16 MiB + 1 B", "PUBACK 0x10 (No matching subscribers)"},
				"slow-connect":       {"Opened 51 of 51", "still held 51 of them, the half CONNECT among them"},
			},
		},
		{
			name: "Mosquitto with a password file lets a user take over its own client ids",
			start: func(t *testing.T) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"alice": alicePass}})
				return brokerURL("mqtt", m.Port), Options{Username: "alice", Password: alicePass}
			},
			want: map[string]string{"client-id-takeover": "info", "invalid-topic": "passed", "invalid-utf8": "passed",
				"invalid-qos": "passed", "max-payload": "low", "slow-connect": "low"},
			evidence: map[string][]string{
				"client-id-takeover": {`user "alice"`, "use_username_as_clientid"},
				"max-payload":        {`As user "alice"`, "16 MiB + 1 B"},
			},
		},
		{
			name: "Mosquitto with max_packet_size advertises it and refuses a larger message",
			start: func(t *testing.T) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, Extra: "max_packet_size 1048576"})
				return brokerURL("mqtt", m.Port), Options{}
			},
			checks: []string{"max-payload"},
			want:   map[string]string{"max-payload": "info"},
			evidence: map[string][]string{"max-payload": {"Messages up to 256 KiB are accepted", "maximum packet size of 1048576 bytes",
				"1 MiB + 1 B to", "DISCONNECT 0x95 (Packet too large)"}},
		},
		{
			// Mosquitto grants any valid subscription and applies the ACL
			// when it delivers: the SUBSCRIBE probes run.
			name: "Mosquitto whose ACL lets the user publish none of the audit's topics skips the probes that publish",
			start: func(t *testing.T) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"alice": alicePass},
					ACL: "user alice\ntopic readwrite sensors/alice/#\n"})
				return brokerURL("mqtt", m.Port), Options{Username: "alice", Password: alicePass}
			},
			checks: []string{"client-id-takeover", "invalid-topic", "invalid-utf8", "invalid-qos", "max-payload"},
			want: map[string]string{"client-id-takeover": "info", "invalid-topic": "passed", "invalid-utf8": "skipped",
				"invalid-qos": "passed", "max-payload": "skipped"},
			notes: map[string][]string{
				"invalid-utf8": {`user "alice" (given) may not publish under the audit's topics`, "PUBACK 0x87 (Not authorized)"},
				"max-payload":  {"PUBACK 0x87 (Not authorized)"},
			},
		},
		{
			// mochi-mqtt v2.7.9 checks only where '#' is; Vigil's broker
			// refuses "x+/y" and "x#" itself.
			name: "Vigil in production: a device can take over its own client ids",
			start: func(t *testing.T) (string, Options) {
				v := startVigil(t, true, map[string]string{"dev1": devPass})
				return brokerURL("mqtt", v.Port), Options{Username: "dev1", Password: devPass}
			},
			want: map[string]string{"client-id-takeover": "info", "invalid-topic": "passed", "invalid-utf8": "passed",
				"invalid-qos": "passed", "max-payload": "info", "slow-connect": "low"},
			evidence: map[string][]string{
				"client-id-takeover": {`user "dev1"`, "DISCONNECT 0x8E (Session taken over)"},
				"max-payload":        {"Messages up to 256 KiB are accepted", "1 MiB + 1 B", "connection closed"},
				"slow-connect":       {"still held 51 of them"},
			},
		},
		{
			name: "Vigil in local mode: anyone on this machine can take over a client id (explained, as local mode's anonymous access)",
			start: func(t *testing.T) (string, Options) {
				v := startVigil(t, false, nil)
				return brokerURL("mqtt", v.Port), Options{LocalMode: true}
			},
			want: map[string]string{"client-id-takeover": "info", "invalid-topic": "passed", "invalid-utf8": "passed",
				"invalid-qos": "passed", "max-payload": "info", "slow-connect": "low"},
			evidence: map[string][]string{
				"client-id-takeover": {"as an anonymous client", "only programs on this machine"},
			},
		},
		{
			name: "Vigil in production without credentials: nobody can connect, so only slow-connect runs",
			start: func(t *testing.T) (string, Options) {
				v := startVigil(t, true, map[string]string{"dev1": devPass})
				return brokerURL("mqtt", v.Port), Options{}
			},
			want: map[string]string{"client-id-takeover": "skipped", "invalid-topic": "skipped", "invalid-utf8": "skipped",
				"invalid-qos": "skipped", "max-payload": "skipped", "slow-connect": "low"},
			notes: map[string][]string{"client-id-takeover": {"an anonymous CONNECT got 0x86 (Bad User Name or Password)"}},
		},
		{
			name: "over WebSocket the probes work and slow-connect has no TCP endpoint to try",
			start: func(t *testing.T) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, WebSocket: true})
				return brokerURL("ws", m.WSPort) + "/mqtt", Options{}
			},
			checks:   []string{"client-id-takeover", "invalid-qos", "slow-connect"},
			want:     map[string]string{"client-id-takeover": "medium", "invalid-qos": "passed", "slow-connect": "skipped"},
			evidence: map[string][]string{"client-id-takeover": {"ws://127.0.0.1:"}},
			notes:    map[string][]string{"slow-connect": {"WebSocket only"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			target, o := c.start(t)
			checks := c.checks
			if checks == nil {
				checks = protocolChecks
			}
			r := audit(t, target, o, checks...)
			t.Logf("%s in %d ms", target, r.DurationMS)
			if got := protocolVerdicts(r); !maps.Equal(got, c.want) {
				t.Fatalf("verdicts %v, want %v\n%s", got, c.want, describe(r))
			}
			for id, wants := range c.evidence {
				var all strings.Builder
				for _, f := range r.Findings {
					if f.ID == id {
						all.WriteString(f.Title + "\n" + f.Evidence + "\n" + f.Remediation + "\n")
					}
				}
				for _, w := range wants {
					if !strings.Contains(all.String(), w) {
						t.Errorf("%s does not show %q:\n%s", id, w, all.String())
					}
				}
			}
			for id, wants := range c.notes {
				for _, w := range wants {
					if note := status(r, id).Note; !strings.Contains(note, w) {
						t.Errorf("%s's note does not say %q: %s", id, w, note)
					}
				}
			}
			for _, f := range r.Findings {
				if f.Severity > Info && (f.Title == "" || f.Evidence == "" || f.Remediation == "") {
					t.Errorf("finding without title, evidence or remediation: %+v", f)
				}
				for _, s := range []string{f.Title, f.Evidence, f.Remediation} {
					if strings.Contains(s, alicePass) || strings.Contains(s, devPass) {
						t.Errorf("a finding shows a password: %+v", f)
					}
				}
			}
		})
	}
}

// What Mosquitto 2.0.11 and Vigil's broker (mochi-mqtt v2.7.9) answer to
// each packet the specification forbids, as the probes see it.
func TestForbiddenPacketsAnswers(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	v := startVigil(t, false, nil)
	type probe func(ctx context.Context, p *prober) (outcome, error)
	pub := func(topic string, qos byte) probe {
		return func(ctx context.Context, p *prober) (outcome, error) { return p.publish(ctx, topic, qos, []byte("x")) }
	}
	sub := func(filter string, qos byte) probe {
		return func(ctx context.Context, p *prober) (outcome, error) { return p.subscribe(ctx, filter, qos) }
	}
	takeover := func(ctx context.Context, p *prober) (outcome, error) {
		cid := p.env.ClientID("victim")
		a, err := p.env.rawConnect(ctx, p.ep, cid, p.id)
		if err != nil {
			return outcome{}, err
		}
		defer a.Close()
		b, err := p.env.rawConnect(ctx, p.ep, cid, p.id)
		if err != nil {
			return outcome{}, err
		}
		defer b.Close()
		return a.probe(nil)
	}
	// Under vigil-audit/, where Vigil's anonymous clients may publish
	// and subscribe.
	rows := []struct {
		what             string
		probe            probe
		mosquitto, vigil string
	}{
		{"a valid PUBLISH QoS 1", pub("vigil-audit/a/b", 1), "PUBACK 0x10 (No matching subscribers)", "PUBACK 0x00 (Success)"},
		{"PUBLISH to a topic name with '+'", pub("vigil-audit/a/+", 1), "DISCONNECT 0x82 (Protocol Error)", "DISCONNECT 0x82 (Protocol Error)"},
		{"PUBLISH to a topic name with '#'", pub("vigil-audit/a/b#", 1), "DISCONNECT 0x82 (Protocol Error)", "DISCONNECT 0x82 (Protocol Error)"},
		{"PUBLISH to a topic name of invalid UTF-8", pub("vigil-audit/a/\xc3\x28", 1), "DISCONNECT 0x81 (Malformed Packet)", "connection closed"},
		{"PUBLISH to a topic name with U+0000", pub("vigil-audit/a/\x00", 1), "DISCONNECT 0x81 (Malformed Packet)", "connection closed"},
		{"PUBLISH with QoS 3", pub("vigil-audit/a/b", 3), "DISCONNECT 0x81 (Malformed Packet)", "connection closed"},
		{"a valid SUBSCRIBE", sub("vigil-audit/a/#", 0), "SUBACK 0x00 (Success)", "SUBACK 0x00 (Success)"},
		{"SUBSCRIBE to a filter with '#' not last", sub("vigil-audit/a/#/b", 0), "DISCONNECT 0x81 (Malformed Packet)", "SUBACK 0x8F (Topic Filter invalid)"},
		{"SUBSCRIBE to a filter with '+' inside a level", sub("vigil-audit/a/x+/b", 0), "DISCONNECT 0x81 (Malformed Packet)", "SUBACK 0x87 (Not authorized)"},
		{"SUBSCRIBE to a filter with '#' inside a level", sub("vigil-audit/a/x#", 0), "DISCONNECT 0x81 (Malformed Packet)", "SUBACK 0x87 (Not authorized)"},
		{"SUBSCRIBE requesting QoS 3", sub("vigil-audit/a/#", 3), "DISCONNECT 0x81 (Malformed Packet)", "connection closed"},
		{"a second CONNECT with a client id in use (to the first)", takeover, "connection closed", "DISCONNECT 0x8E (Session taken over)"},
	}
	for _, b := range []struct{ name, target string }{{"mosquitto", brokerURL("mqtt", m.Port)}, {"vigil", brokerURL("mqtt", v.Port)}} {
		tg, err := ParseTarget(b.target)
		if err != nil {
			t.Fatal(err)
		}
		o := Options{}
		o.defaults()
		env, err := newEnv(tg, &o)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		p, err := env.newProber(ctx, "answers")
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			want := row.mosquitto
			if b.name == "vigil" {
				want = row.vigil
			}
			got, err := row.probe(ctx, p)
			if err != nil {
				t.Fatalf("%s, %s: %v", b.name, row.what, err)
			}
			if got.String() != want {
				t.Errorf("%s answers %s with %s, want %s", b.name, row.what, got, want)
			}
		}
		p.close()
	}
}

// The reader of the broker's packets never panics, whatever a broker sends.
func FuzzReadPacket(f *testing.F) {
	for _, s := range [][]byte{
		{0x20, 0x03, 0x00, 0x00, 0x00},                // CONNACK
		{0x40, 0x02, 0x00, 0x01},                      // PUBACK, success
		{0x40, 0x03, 0x00, 0x01, 0x87},                // PUBACK, not authorized
		{0x90, 0x04, 0x00, 0x01, 0x00, 0x00},          // SUBACK
		{0xe0, 0x01, 0x8e},                            // DISCONNECT, reason only (Mosquitto)
		{0xe0, 0x02, 0x82, 0x00},                      // DISCONNECT with properties (mochi)
		{0x30, 0x06, 0x00, 0x01, 'a', 0x00, 'h', 'i'}, // PUBLISH
		{0xd0, 0x00},                                  // PINGRESP
		{0x30, 0xff, 0xff, 0xff, 0x7f},                // a PUBLISH too large to read
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		readPacket(bufio.NewReader(bytes.NewReader(b)))
	})
}

// The protocol checks against a local broker: Mosquitto and Vigil's in
// local mode. go test -run X -bench ProtocolChecks -benchtime 3x
// ./internal/audit
func BenchmarkProtocolChecks(b *testing.B) {
	m := testpeer.StartMosquitto(b, testpeer.MosquittoConfig{Anonymous: true})
	v := startVigil(b, false, nil)
	for _, c := range []struct{ name, target string }{{"mosquitto", brokerURL("mqtt", m.Port)}, {"vigil", brokerURL("mqtt", v.Port)}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				r := audit(b, c.target, Options{}, protocolChecks...)
				for _, ch := range r.Checks {
					b.ReportMetric(float64(ch.DurationMS), ch.ID+"-ms")
				}
			}
		})
	}
}
