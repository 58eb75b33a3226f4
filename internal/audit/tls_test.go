package audit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/testpeer"
)

// modernCiphers is Mozilla's "intermediate" TLS 1.2 list for an ECDSA
// certificate: forward-secret AEADs only.
const modernCiphers = "ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"

func TestTransportChecksOnRealBrokers(t *testing.T) {
	day := 24 * time.Hour
	type setup func(t *testing.T) (target string, o Options)
	// mosquitto starts a Mosquitto with a plaintext port and a TLS port
	// with a certificate shaped by co and the listener's own lines; the
	// audit tries both ports (or only the TLS one).
	mosquitto := func(co testpeer.CertOptions, trustCA, tlsOnly bool, lines ...string) setup {
		return func(t *testing.T) (string, Options) {
			cert := testpeer.SelfSigned(t, t.TempDir(), co)
			port := testpeer.FreePort(t)
			m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, Extra: mosquittoTLSListener(port, cert, lines...)})
			waitListening(t, port)
			o := Options{NoDefaultPorts: true, Ports: []int{m.Port, port}}
			if tlsOnly {
				o.Ports = []int{port}
			}
			if trustCA {
				o.CAFile = cert.CAFile
			}
			return "127.0.0.1", o
		}
	}
	tests := []struct {
		name  string
		setup setup
		// want is each check's outcome: its worst severity, "none" or
		// "skipped".
		want map[string]string
		// title is a part of one of the check's finding titles.
		title map[string]string
	}{
		{
			name: "an open Mosquitto without TLS",
			setup: func(t *testing.T) (string, Options) {
				m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
				return brokerURL("mqtt", m.Port), Options{}
			},
			want:  map[string]string{"no-tls": "high", "tls-weak": "skipped", "tls-cert": "skipped"},
			title: map[string]string{"no-tls": "credentials and data cross the network in clear"},
		},
		{
			name:  "Mosquitto with a self-signed certificate beside plaintext, its CA unknown",
			setup: mosquitto(testpeer.CertOptions{}, false, false),
			// OpenSSL's default list, which Mosquitto keeps, has the
			// CBC-SHA256 suites.
			want:  map[string]string{"no-tls": "low", "tls-weak": "medium", "tls-cert": "medium"},
			title: map[string]string{"tls-cert": "not trusted: it is self-signed", "tls-weak": "weak cipher suites"},
		},
		{
			name:  "the same with its CA given",
			setup: mosquitto(testpeer.CertOptions{}, true, false),
			want:  map[string]string{"no-tls": "low", "tls-weak": "medium", "tls-cert": "info"},
		},
		{
			name:  "an expired certificate",
			setup: mosquitto(testpeer.CertOptions{NotBefore: time.Now().Add(-400 * day), NotAfter: time.Now().Add(-2 * day)}, true, false),
			want:  map[string]string{"tls-cert": "high"},
			title: map[string]string{"tls-cert": "expired on"},
		},
		{
			name:  "a certificate for another host",
			setup: mosquitto(testpeer.CertOptions{Hosts: []string{"broker.example.net"}}, true, false),
			want:  map[string]string{"tls-cert": "high"},
			title: map[string]string{"tls-cert": "is not for 127.0.0.1"},
		},
		{
			name:  "a certificate expiring in 10 days",
			setup: mosquitto(testpeer.CertOptions{NotAfter: time.Now().Add(10 * day)}, true, false),
			want:  map[string]string{"tls-cert": "low"},
			title: map[string]string{"tls-cert": "expires in 10 days"},
		},
		{
			name: "a valid certificate seen by a clock a year ahead",
			setup: func(t *testing.T) (string, Options) {
				target, o := mosquitto(testpeer.CertOptions{}, true, false)(t)
				o.Now = func() time.Time { return time.Now().Add(400 * day) }
				return target, o
			},
			want:  map[string]string{"tls-cert": "high"},
			title: map[string]string{"tls-cert": "expired on"},
		},
		{
			// OpenSSL 3 refuses TLS 1.1 at its default security level
			// even with tls_version tlsv1.1; @SECLEVEL=0 lets it.
			name:  "Mosquitto accepting TLS 1.1",
			setup: mosquitto(testpeer.CertOptions{}, true, false, "tls_version tlsv1.1", "ciphers DEFAULT:@SECLEVEL=0"),
			want:  map[string]string{"no-tls": "low", "tls-weak": "high", "tls-cert": "info"},
			title: map[string]string{"tls-weak": "accepts TLS 1.1"},
		},
		{
			name:  "a modern Mosquitto TLS listener alone",
			setup: mosquitto(testpeer.CertOptions{}, true, true, "tls_version tlsv1.2", modernCiphers),
			want:  map[string]string{"no-tls": "none", "tls-weak": "info", "tls-cert": "info"},
		},
		{
			name: "Vigil in production",
			setup: func(t *testing.T) (string, Options) {
				vb := startVigil(t, true, map[string]string{"admin": "admin-pass-1"})
				return "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{vb.Port, vb.TLSPort}, CAFile: vb.CAFile}
			},
			// Vigil's TLS listener takes forward-secret AEAD suites only.
			want: map[string]string{"no-tls": "low", "tls-weak": "info", "tls-cert": "info"},
		},
		{
			name: "Vigil in local mode",
			setup: func(t *testing.T) (string, Options) {
				vb := startVigil(t, false, nil)
				return brokerURL("mqtt", vb.Port), Options{LocalMode: true}
			},
			want:  map[string]string{"no-tls": "info", "tls-weak": "skipped", "tls-cert": "skipped"},
			title: map[string]string{"no-tls": "Local mode: plaintext MQTT on loopback only"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target, o := tt.setup(t)
			r := audit(t, target, o, "open-ports", "no-tls", "tls-weak", "tls-cert")
			for id, want := range tt.want {
				if got := outcomeOf(r, id); got != want {
					t.Errorf("%s: %s, want %s", id, got, want)
				}
			}
			for id, part := range tt.title {
				found := false
				for _, f := range r.Findings {
					found = found || f.ID == id && strings.Contains(f.Title, part)
				}
				if !found {
					t.Errorf("%s: no finding titled with %q", id, part)
				}
			}
			for _, f := range r.Findings {
				if f.Title == "" || f.Evidence == "" || f.Remediation == "" {
					t.Errorf("%s finding incomplete: %+v", f.ID, f)
				}
			}
			if t.Failed() {
				t.Log(describe(r))
			}
		})
	}
}

// The evidence of tls-weak names the versions and suites accepted, and
// tls-cert's the certificate: subject, issuer, names, dates, fingerprint.
func TestTransportEvidenceNamesWhatWasSeen(t *testing.T) {
	cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
	port := testpeer.FreePort(t)
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true,
		Extra: mosquittoTLSListener(port, cert, "tls_version tlsv1.1", "ciphers DEFAULT:@SECLEVEL=0")})
	waitListening(t, port)
	r := audit(t, "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{m.Port, port}}, "open-ports", "tls-weak", "tls-cert")
	var weak, certs []string
	for _, f := range r.Findings {
		switch f.ID {
		case "tls-weak":
			weak = append(weak, f.Evidence)
		case "tls-cert":
			certs = append(certs, f.Evidence)
		}
	}
	for _, tt := range []struct {
		name     string
		evidence []string
		parts    []string
	}{
		{"tls-weak lists the versions and the weak suites", weak, []string{
			"accepted: TLS 1.1 (", "TLS 1.2 (", "refused: TLS 1.0",
			"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256: CBC with HMAC-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: CBC with HMAC-SHA1",
		}},
		{"tls-cert describes the certificate", certs, []string{
			"subject: CN=vigil-test", "issuer: CN=vigil-test", "names (SAN): localhost, 127.0.0.1", "valid: ", "days left", "SHA-256: ",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			all := strings.Join(tt.evidence, "\n")
			for _, p := range tt.parts {
				if !strings.Contains(all, p) {
					t.Errorf("evidence lacks %q:\n%s", p, all)
				}
			}
		})
	}
}

// When no TLS handshake succeeds on the endpoints open-ports found (the
// broker went away, or wants a client certificate), tls-weak and tls-cert
// both skip and say why: neither passes, reports info, nor fails.
func TestTLSChecksSkipWithoutAHandshake(t *testing.T) {
	o := Options{Timeout: time.Second}
	o.defaults()
	tg, err := ParseTarget("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	env, err := newEnv(tg, &o)
	if err != nil {
		t.Fatal(err)
	}
	ep := Endpoint{Scheme: "mqtts", Host: "127.0.0.1", Port: testpeer.FreePort(t)} // nothing listens
	env.AddMQTT(ep)
	env.setScanned()
	for _, id := range []string{"tls-weak", "tls-cert"} {
		t.Run(id+" skips", func(t *testing.T) {
			env.run(context.Background(), checkByID(id))
			s := status(env.report, id)
			if s.Status != StatusSkipped || !strings.Contains(s.Note, "no TLS handshake succeeded on "+ep.URL()) {
				t.Errorf("%+v\n%s", s, describe(env.report))
			}
			if f, ok := finding(env.report, id); ok {
				t.Errorf("finding %+v", f)
			}
		})
	}
}

func checkByID(id string) *Check {
	for _, c := range checks {
		if c.ID == id {
			return c
		}
	}
	return nil
}
