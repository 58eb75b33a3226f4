package audit

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/testpeer"
)

var identityChecks = []string{"anonymous-access", "weak-credentials", "broker-fingerprint", "sys-topics-exposed",
	"wildcard-subscribe", "retained-leak", "sys-publish", "acl-publish"}

// retain publishes retained messages to a broker, as devices would have.
func retain(t testing.TB, target, user, pass string, msgs map[string]string) {
	t.Helper()
	o := Options{Timeout: 2 * time.Second}
	o.defaults()
	tg, err := ParseTarget(target)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := newEnv(tg, &o)
	var id *Identity
	if user != "" {
		id = &Identity{Username: user, Password: pass}
	}
	s, err := env.Connect(context.Background(), tg.Endpoints[0], "device-"+rnd.Hex(3), id)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for topic, payload := range msgs {
		if _, err := s.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)}); err != nil {
			t.Fatalf("retain %s: %v", topic, err)
		}
	}
}

// The identity checks against real brokers: each configuration gets the
// findings it deserves and no other.
func TestIdentityChecksOnRealBrokers(t *testing.T) {
	testpeer.Need(t, "mosquitto")
	retainedData := map[string]string{
		"home/thermostat/config": `{"ssid":"home","password":"wifi-pass-123"}`,
		"home/thermostat/temp":   `{"temperature":21.5}`,
	}
	cases := []struct {
		name    string
		target  func(t *testing.T) string
		opts    Options
		want    []string // findings above info
		wantSev map[string]Severity
		broker  string // the fingerprint's start
	}{
		{
			name: "open mosquitto",
			target: func(t *testing.T) string {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
				u := brokerURL("mqtt", m.Port)
				retain(t, u, "", "", retainedData)
				return u
			},
			want:    []string{"acl-publish", "anonymous-access", "retained-leak", "sys-topics-exposed", "wildcard-subscribe"},
			wantSev: map[string]Severity{"anonymous-access": Critical, "wildcard-subscribe": High, "acl-publish": High, "retained-leak": High, "sys-topics-exposed": Medium},
			broker:  "Mosquitto 2.",
		},
		{
			name: "mosquitto with a weak password",
			target: func(t *testing.T) string {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"admin": "admin", "dev1": "s3cure-long-pass"}})
				u := brokerURL("mqtt", m.Port)
				retain(t, u, "dev1", "s3cure-long-pass", retainedData)
				return u
			},
			// admin/admin is found and used: no ACL, so it reads and writes everything.
			want:    []string{"acl-publish", "retained-leak", "sys-topics-exposed", "weak-credentials", "wildcard-subscribe"},
			wantSev: map[string]Severity{"weak-credentials": Critical, "wildcard-subscribe": Low, "acl-publish": Medium, "sys-topics-exposed": Low},
			broker:  "Mosquitto 2.",
		},
		{
			name: "mosquitto with ACLs",
			target: func(t *testing.T) string {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{
					Users: map[string]string{"dev1": "dev1-long-pass", "dev2": "dev2-long-pass"},
					ACL:   "pattern readwrite devices/%u/#\n",
				})
				u := brokerURL("mqtt", m.Port)
				retain(t, u, "dev2", "dev2-long-pass", map[string]string{"devices/dev2/config": `{"token":"abcdef123456"}`})
				return u
			},
			opts: Options{Username: "dev1", Password: "dev1-long-pass"},
			want: nil, // dev1 reads and writes only devices/dev1/#
		},
		{
			name: "vigil in production",
			target: func(t *testing.T) string {
				vb := startVigil(t, true, map[string]string{"dev1": "dev1-long-pass-1"})
				return brokerURL("mqtt", vb.Port)
			},
			want: nil, // anonymous refused; no weak password; nothing else can connect
		},
		{
			name: "vigil in production, audited as a device",
			target: func(t *testing.T) string {
				vb := startVigil(t, true, map[string]string{"dev1": "dev1-long-pass-1", "dev2": "dev2-long-pass-1"})
				retain(t, brokerURL("mqtt", vb.Port), "dev2", "dev2-long-pass-1", map[string]string{"vigil/home/dev2/meta": `{"capabilities":["camera"]}`})
				return brokerURL("mqtt", vb.Port)
			},
			opts: Options{Username: "dev1", Password: "dev1-long-pass-1"},
			want: nil,
		},
		{
			name: "vigil in local mode",
			target: func(t *testing.T) string {
				vb := startVigil(t, false, nil)
				return brokerURL("mqtt", vb.Port)
			},
			opts:   Options{LocalMode: true},
			want:   nil, // anonymous on loopback is reported as info, plainly
			broker: "mochi-mqtt 2.",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := c.target(t)
			start := time.Now()
			r := audit(t, target, c.opts, identityChecks...)
			var took []string
			for _, c := range r.Checks {
				took = append(took, fmt.Sprintf("%s %dms", c.ID, c.DurationMS))
			}
			t.Logf("%s: %v (%s)", c.name, time.Since(start).Round(time.Millisecond), strings.Join(took, ", "))
			got := ids(r, Info)
			if !slices.Equal(got, c.want) {
				t.Fatalf("findings above info: %v, want %v\n%s", got, c.want, describe(r))
			}
			for id, sev := range c.wantSev {
				if f, _ := finding(r, id); f.Severity != sev {
					t.Errorf("%s is %s, want %s\n%s", id, f.Severity, sev, describe(r))
				}
			}
			if c.broker != "" && !strings.HasPrefix(r.Broker, c.broker) {
				t.Errorf("broker %q, want %s...", r.Broker, c.broker)
			}
			for _, f := range r.Findings {
				for _, secret := range []string{"wifi-pass-123", "abcdef123456", "dev1-long-pass", "s3cure-long-pass"} {
					if strings.Contains(f.Evidence, secret) || strings.Contains(f.Title, secret) {
						t.Errorf("%s shows a secret: %s", f.ID, f.Evidence)
					}
				}
			}
			if c.opts.LocalMode {
				f, ok := finding(r, "anonymous-access")
				if !ok || !strings.Contains(f.Title, "loopback only") || !strings.Contains(f.Remediation, "leave local mode") {
					t.Errorf("local mode is not explained plainly: %+v", f)
				}
			}
		})
	}
}

// The guessing rate paces a ticker: whatever a caller gives, the defaults
// leave a rate a ticker takes (above 0, at most 1000 a second).
func TestCredentialRateIsClamped(t *testing.T) {
	for _, tt := range []struct {
		give, want float64
	}{
		{0, 20}, {-5, 20}, {math.NaN(), 20}, {math.Inf(-1), 20},
		{0.5, 0.5}, {20, 20}, {1000, 1000},
		{1001, 1000}, {1e9, 1000}, {1e300, 1000}, {math.Inf(1), 1000},
	} {
		t.Run(fmt.Sprintf("a rate of %g becomes %g", tt.give, tt.want), func(t *testing.T) {
			o := Options{CredentialRate: tt.give}
			o.defaults()
			if o.CredentialRate != tt.want {
				t.Errorf("rate %g, want %g", o.CredentialRate, tt.want)
			}
			time.NewTicker(time.Duration(float64(time.Second) / o.CredentialRate)).Stop() // panics on a period <= 0
		})
	}
}

// A password weak-credentials guesses is never in a report, in any
// format: not the password, nor a hint such as its length and first
// character. The evidence says where the guess came from instead.
func TestGuessedPasswordsNeverShow(t *testing.T) {
	const guessed = "Tr0ub4dor-and-3"
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"admin": "admin", "dev1": guessed}})
	r := audit(t, brokerURL("mqtt", m.Port), Options{UserList: []string{"dev1"}, PassList: []string{"", "letmein", "", guessed}, CredentialRate: 200},
		"anonymous-access", "weak-credentials", "broker-fingerprint")
	f, ok := finding(r, "weak-credentials")
	if !ok || f.Severity != Critical {
		t.Fatalf("no weak-credentials finding:\n%s", describe(r))
	}
	for _, want := range []string{`user "admin": password found: a built-in vendor default`, `user "dev1": password found: --passlist line 4`} {
		if !strings.Contains(f.Evidence, want) {
			t.Errorf("evidence lacks %q:\n%s", want, f.Evidence)
		}
	}
	for _, format := range Formats {
		t.Run("the "+format+" report holds no password nor hint", func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, format, []*Report{r}, FormatOptions{}); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, leak := range []string{guessed, "characters", "starting", `\"T\"`, `"T"`, `"a"`, `&#34;T&#34;`, "15 char", "15 byte", "15 letter", "length 15", "length: 15", "5 char"} {
				if strings.Contains(out, leak) {
					i := strings.Index(out, leak)
					t.Errorf("%s holds %q: ...%s...", format, leak, out[max(0, i-80):min(len(out), i+80)])
				}
			}
		})
	}
}
