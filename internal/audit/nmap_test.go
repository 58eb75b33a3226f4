package audit

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/testpeer"
)

func TestNmapMergesItsViewOrSaysWhyNot(t *testing.T) {
	testpeer.Need(t, "nmap")
	open := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	// A password nmap's argument parser must be given quoted.
	const secret = `n0t,in"evi\dence{=}`
	closed := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"alice": secret}})
	vigil := startVigil(t, true, map[string]string{"admin": secret})
	// Plain MQTT beside TLS, logging each client's username.
	cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
	both := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"alice": secret}, TLS: &cert,
		Extra: "log_type notice\nconnection_messages true\n"})
	// A retained message for nmap's # subscription to bring back.
	pub := testpeer.Need(t, "mosquitto_pub")
	for _, args := range [][]string{
		{"-p", strconv.Itoa(open.Port), "-t", "sensors/door", "-m", "open", "-r"},
		{"-p", strconv.Itoa(closed.Port), "-u", "alice", "-P", secret, "-t", "sensors/door", "-m", "open", "-r"},
	} {
		if out, err := exec.Command(pub, append([]string{"-h", "127.0.0.1"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	// The checks whose findings nmap adds to, when they have one.
	merged := []string{"open-ports", "broker-fingerprint", "sys-topics-exposed", "wildcard-subscribe"}
	tests := []struct {
		name   string
		target string
		opts   Options
		nmap   string   // how Report.Nmap starts
		status string   // the nmap check's status
		parts  []string // in the nmap finding's evidence
		into   []string // the checks whose evidence gets nmap's view
		after  func(t *testing.T)
	}{
		{
			name:   "against an open Mosquitto, nmap's view is merged",
			target: brokerURL("mqtt", open.Port),
			nmap:   "used (nmap ",
			status: StatusFound,
			parts:  []string{"$SYS/broker/version: mosquitto version", "mqtt-subscribe as an anonymous client", "other topics: sensors/door"},
			into:   merged,
		},
		{
			name:   "with the given credentials, nmap reads what that user may",
			target: brokerURL("mqtt", closed.Port),
			opts:   Options{Username: "alice", Password: secret},
			nmap:   "used (nmap ",
			status: StatusFound,
			parts:  []string{"$SYS/broker/version: mosquitto version", `mqtt-subscribe as user "alice" (given)`},
			into:   merged,
		},
		{
			// Vigil gives its admin neither $SYS nor a retained message:
			// the script, which waits for messages, is cut short.
			name:   "on a broker where nothing can be read, nmap is cut short",
			target: brokerURL("mqtt", vigil.Port),
			opts:   Options{Username: "admin", Password: secret},
			nmap:   "used (nmap ",
			status: StatusFound,
			parts:  []string{`mqtt-subscribe as user "admin" (given): no result within 2s`},
			into:   []string{"open-ports"},
		},
		{
			// nmap's script speaks plain MQTT only: where the broker
			// offers TLS, the password must not cross in clear.
			name:   "when the broker offers TLS, nmap runs anonymously rather than send the password in clear",
			target: "127.0.0.1",
			opts:   Options{NoDefaultPorts: true, Ports: []int{both.Port, both.TLSPort}, CAFile: cert.CAFile, Username: "alice", Password: secret},
			nmap:   "used (nmap ",
			status: StatusFound,
			parts: []string{"mqtt-subscribe as an anonymous client",
				`ran anonymously: the broker offers MQTT over TLS, and mqtt-subscribe speaks only plain MQTT, which would carry user "alice"'s password in clear`},
			into: []string{"open-ports"},
			after: func(t *testing.T) {
				for _, l := range strings.Split(both.Log(), "\n") {
					if strings.Contains(l, "-nmap-") && strings.Contains(l, "u'alice'") {
						t.Errorf("nmap's connections went as alice: %s", l)
					}
				}
			},
		},
		{
			name:   "with --no-nmap, the report says skipped and nmap adds nothing",
			target: brokerURL("mqtt", open.Port),
			opts:   Options{NoNmap: true},
			nmap:   "skipped (--no-nmap)",
			status: StatusSkipped,
		},
		{
			name:   "without nmap, the audit still runs and says nmap is not installed",
			target: brokerURL("mqtt", open.Port),
			opts:   Options{Nmap: filepath.Join(t.TempDir(), "nmap")},
			nmap:   "not installed",
			status: StatusSkipped,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checks := append([]string{"nmap", "anonymous-access"}, merged...)
			r := audit(t, tt.target, tt.opts, checks...)
			if !strings.HasPrefix(r.Nmap, tt.nmap) {
				t.Errorf("Report.Nmap %q, want %q...", r.Nmap, tt.nmap)
			}
			if got := status(r, "nmap"); got.Status != tt.status {
				t.Errorf("nmap check %s (%s), want %s", got.Status, got.Note, tt.status)
			}
			if _, ok := finding(r, "open-ports"); !ok {
				t.Errorf("the audit did not run on:\n%s", describe(r))
			}
			f, ok := finding(r, "nmap")
			if ok != (len(tt.parts) > 0) {
				t.Fatalf("nmap finding %v, want %v:\n%s", ok, len(tt.parts) > 0, describe(r))
			}
			if ok && (f.Severity != Info || f.Remediation == "") {
				t.Errorf("nmap finding %+v", f)
			}
			for _, p := range tt.parts {
				if !strings.Contains(f.Evidence, p) {
					t.Errorf("nmap evidence lacks %q:\n%s", p, f.Evidence)
				}
			}
			for _, id := range merged {
				g, ok := finding(r, id)
				want := slices.Contains(tt.into, id)
				if want && !ok {
					t.Errorf("no %s finding to merge into", id)
				}
				if got := strings.Contains(g.Evidence, "nmap "); got != want {
					t.Errorf("%s evidence has nmap's view: %v, want %v:\n%s", id, got, want, g.Evidence)
				}
			}
			if d := time.Duration(status(r, "nmap").DurationMS) * time.Millisecond; d > nmapQuiet+5*time.Second {
				t.Errorf("nmap took %v", d)
			}
			text := []string{r.Nmap}
			for _, f := range r.Findings {
				text = append(text, f.Title, f.Evidence, f.Remediation)
			}
			for _, c := range r.Checks {
				text = append(text, c.Note)
			}
			if strings.Contains(strings.Join(text, "\n"), secret) {
				t.Errorf("the report holds the password:\n%s", describe(r))
			}
			if tt.after != nil {
				tt.after(t)
			}
			if t.Failed() {
				t.Log(describe(r))
			}
		})
	}
}
