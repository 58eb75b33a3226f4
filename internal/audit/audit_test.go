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

// auditCase is a broker configuration and what a whole audit of it must
// find above info.
type auditCase struct {
	name  string
	setup func(t testing.TB) (string, Options)
	want  map[string]Severity // findings above info
	grade string
}

func auditCases() []auditCase {
	seed := map[string]string{
		"home/thermostat/config": `{"ssid":"home","password":"wifi-pass-123"}`,
		"home/thermostat/temp":   `{"temperature":21.5}`,
	}
	strong := "Str0ng-device-pass"
	return []auditCase{
		{
			name: "Mosquitto, wide open",
			setup: func(t testing.TB) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
				retain(t, brokerURL("mqtt", m.Port), "", "", seed)
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{m.Port}}
			},
			want: map[string]Severity{"anonymous-access": Critical, "no-tls": High, "wildcard-subscribe": High, "retained-leak": High,
				"acl-publish": High, "sys-topics-exposed": Medium, "client-id-takeover": Medium, "max-payload": Low, "slow-connect": Low},
			grade: "F",
		},
		{
			name: "Mosquitto with a password file and a weak password",
			setup: func(t testing.TB) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"admin": "admin", "dev1": strong}})
				retain(t, brokerURL("mqtt", m.Port), "dev1", strong, seed)
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{m.Port}}
			},
			// admin/admin is found; with it, no ACL holds anything back.
			want: map[string]Severity{"weak-credentials": Critical, "no-tls": High, "retained-leak": High, "acl-publish": Medium,
				"wildcard-subscribe": Low, "sys-topics-exposed": Low, "max-payload": Low, "slow-connect": Low},
			grade: "F",
		},
		{
			name: "Mosquitto with TLS and a self-signed certificate",
			setup: func(t testing.TB) (string, Options) {
				cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"dev1": strong}, TLS: &cert, NoPlain: true})
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{m.TLSPort}, Username: "dev1", Password: strong, Insecure: true}
			},
			// OpenSSL's default suites include CBC-SHA256 ones.
			want: map[string]Severity{"tls-cert": Medium, "tls-weak": Medium, "wildcard-subscribe": Low, "sys-topics-exposed": Low,
				"max-payload": Low, "slow-connect": Low},
			grade: "C",
		},
		{
			name: "Mosquitto with ACLs, audited as a device",
			setup: func(t testing.TB) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{
					Users: map[string]string{"dev1": strong, "dev2": strong + "2"},
					ACL:   "pattern readwrite devices/%u/#\n",
				})
				retain(t, brokerURL("mqtt", m.Port), "dev2", strong+"2", map[string]string{"devices/dev2/config": `{"token":"abcdef123456"}`})
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{m.Port}, Username: "dev1", Password: strong}
			},
			want:  map[string]Severity{"no-tls": High, "max-payload": Low, "slow-connect": Low},
			grade: "D",
		},
		{
			name: "Vigil in production (0.0.0.0, TLS, users), audited from outside",
			setup: func(t testing.TB) (string, Options) {
				vb := startVigil(t, true, map[string]string{"dev1": strong})
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{vb.Port, vb.TLSPort}, CAFile: vb.CAFile}
			},
			want:  map[string]Severity{"no-tls": Low, "slow-connect": Low},
			grade: "B",
		},
		{
			name: "Vigil in production, audited as a device",
			setup: func(t testing.TB) (string, Options) {
				vb := startVigil(t, true, map[string]string{"dev1": strong})
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{vb.Port, vb.TLSPort}, CAFile: vb.CAFile, Username: "dev1", Password: strong}
			},
			want:  map[string]Severity{"no-tls": Low, "slow-connect": Low},
			grade: "B",
		},
		{
			name: "Vigil in local mode",
			setup: func(t testing.TB) (string, Options) {
				vb := startVigil(t, false, nil)
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{vb.Port}, LocalMode: true}
			},
			want:  map[string]Severity{"slow-connect": Low},
			grade: "B",
		},
	}
}

// A whole default audit (every check but nmap, which has its own test) of
// each configuration: exactly the findings above info that it deserves,
// at the severities it deserves, and no other.
func TestFullAuditOfEachConfiguration(t *testing.T) {
	testpeer.Need(t, "mosquitto")
	for _, c := range auditCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each has its own broker; most of an audit is waiting
			target, o := c.setup(t)
			o.NoNmap = true
			o.Timeout = 2 * time.Second
			start := time.Now()
			rs, err := Run(context.Background(), []string{target}, o)
			if err != nil {
				t.Fatal(err)
			}
			r := rs[0]
			t.Logf("%s: grade %s in %v", c.name, r.Grade, time.Since(start).Round(time.Millisecond))
			got := map[string]Severity{}
			for _, f := range r.Findings {
				if f.Severity > Info {
					got[f.ID] = max(got[f.ID], f.Severity)
				}
			}
			var diff []string
			for id, sev := range c.want {
				if got[id] != sev {
					diff = append(diff, fmt.Sprintf("%s: got %v, want %s", id, sevOrNone(got, id), sev))
				}
			}
			for id, sev := range got {
				if _, ok := c.want[id]; !ok {
					diff = append(diff, fmt.Sprintf("%s: got %s, want none", id, sev))
				}
			}
			slices.Sort(diff)
			if len(diff) > 0 {
				t.Errorf("%s\n%s", strings.Join(diff, "\n"), describe(r))
			}
			if r.Grade != c.grade {
				t.Errorf("grade %s, want %s", r.Grade, c.grade)
			}
			for _, ch := range r.Checks {
				if ch.Status == StatusError {
					t.Errorf("check %s failed: %s", ch.ID, ch.Note)
				}
			}
		})
	}
}

func sevOrNone(m map[string]Severity, id string) string {
	if s, ok := m[id]; ok {
		return s.String()
	}
	return "none"
}

// BenchmarkDefaultAudit times a default audit (every check, nmap too when
// installed) of each configuration over loopback:
// go test -run '^$' -bench DefaultAudit -benchtime 3x ./internal/audit
func BenchmarkDefaultAudit(b *testing.B) {
	for _, c := range auditCases() {
		b.Run(strings.ReplaceAll(c.name, " ", "_"), func(b *testing.B) {
			target, o := c.setup(b)
			o.Timeout = 3 * time.Second
			for b.Loop() {
				rs, err := Run(context.Background(), []string{target}, o)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(rs[0].DurationMS), "ms/audit")
				b.ReportMetric(float64(len(rs[0].Findings)), "findings")
			}
		})
	}
}
