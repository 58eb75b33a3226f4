package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// mosquittoTLSListener is mosquitto.conf text for one more TLS listener
// on 127.0.0.1 (MosquittoConfig.Extra), with its own lines (tls_version,
// ciphers, protocol).
func mosquittoTLSListener(port int, cert testpeer.Cert, lines ...string) string {
	return fmt.Sprintf("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n%s\n", port, cert.CertFile, cert.KeyFile, strings.Join(lines, "\n"))
}

// waitListening waits until a loopback port accepts connections.
func waitListening(t *testing.T, port int) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("something to listen on %d", port), func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// httpServer starts an HTTP server that is not a WebSocket endpoint on
// loopback and returns its port.
func httpServer(t *testing.T) int {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

// outcomeOf says how a check went on a report: "skipped", "error: ...",
// "none" (passed without a finding), or its worst finding's severity.
func outcomeOf(r *Report, id string) string {
	switch st := status(r, id); st.Status {
	case StatusSkipped:
		return "skipped"
	case StatusError:
		return "error: " + st.Note
	case "":
		return "not run"
	}
	worst, any := Info, false
	for _, f := range r.Findings {
		if f.ID == id {
			worst, any = max(worst, f.Severity), true
		}
	}
	if !any {
		return "none"
	}
	return worst.String()
}

func TestOpenPortsListsWhatAnswers(t *testing.T) {
	mq := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, WebSocket: true})
	vigil := startVigil(t, true, map[string]string{"admin": "admin-pass-1"})
	quiet := []int{testpeer.FreePort(t), testpeer.FreePort(t), testpeer.FreePort(t)}
	other := httpServer(t)
	tests := []struct {
		name    string
		target  string
		opts    Options
		title   string   // open-ports' title
		lines   []string // in its evidence
		noTLS   string   // the no-tls outcome
		fastest time.Duration
		sev     Severity // open-ports' severity
	}{
		{
			name:   "an open Mosquitto's plain port speaks MQTT",
			target: brokerURL("mqtt", mq.Port),
			title:  "1 port answers, MQTT on 1",
			lines:  []string{fmt.Sprintf("mqtt://127.0.0.1:%d: speaks MQTT", mq.Port)},
			noTLS:  "high",
		},
		{
			name:   "a broker that refuses anonymous clients still speaks MQTT",
			target: brokerURL("mqtt", vigil.Port),
			title:  "1 port answers, MQTT on 1",
			lines:  []string{fmt.Sprintf("mqtt://127.0.0.1:%d: speaks MQTT", vigil.Port)},
			noTLS:  "high",
		},
		{
			name:   "a URL with the wrong scheme is corrected",
			target: brokerURL("mqtt", mq.WSPort),
			title:  "1 port answers, MQTT on 1",
			lines: []string{fmt.Sprintf("mqtt://127.0.0.1:%d: open, no MQTT answer (the answer to a CONNECT is not a CONNACK); it speaks MQTT as ws://127.0.0.1:%d/mqtt",
				mq.WSPort, mq.WSPort)},
			noTLS: "high",
		},
		{
			name:   "a port that speaks something else is open but not MQTT",
			target: brokerURL("mqtt", other),
			title:  "1 port answers, but none speaks MQTT",
			lines:  []string{fmt.Sprintf("mqtt://127.0.0.1:%d: open, no MQTT answer (no answer to a CONNECT within 2s)", other)},
			noTLS:  "skipped",
			sev:    High, // not a broker: a CI gate fails
		},
		{
			name:    "nothing listening is said at once, without waiting for timeouts",
			target:  "127.0.0.1",
			opts:    Options{NoDefaultPorts: true, Ports: quiet, Timeout: 5 * time.Second},
			title:   "Nothing answers on the ports tried",
			lines:   []string{fmt.Sprintf("no answer: %d, %d, %d", quiet[0], quiet[1], quiet[2])},
			noTLS:   "skipped",
			fastest: time.Second,
			sev:     High, // the broker is down or not there: a CI gate fails
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := audit(t, tt.target, tt.opts, "open-ports", "no-tls")
			f, ok := finding(r, "open-ports")
			if !ok || f.Severity != tt.sev {
				t.Fatalf("want one %s finding from open-ports:\n%s", tt.sev, describe(r))
			}
			if f.Title != tt.title {
				t.Errorf("title %q, want %q", f.Title, tt.title)
			}
			for _, l := range tt.lines {
				if !strings.Contains(f.Evidence, l) {
					t.Errorf("evidence lacks %q:\n%s", l, f.Evidence)
				}
			}
			if f.Remediation == "" {
				t.Error("no remediation")
			}
			if got := outcomeOf(r, "no-tls"); got != tt.noTLS {
				t.Errorf("no-tls: %s, want %s\n%s", got, tt.noTLS, describe(r))
			}
			if tt.fastest > 0 {
				if d := time.Duration(status(r, "open-ports").DurationMS) * time.Millisecond; d > tt.fastest {
					t.Errorf("open-ports took %v on closed loopback ports, want under %v", d, tt.fastest)
				}
			}
		})
	}
}

// Ports given without a scheme: open-ports finds out which of MQTT, MQTT
// over TLS, WebSocket and secure WebSocket each one speaks, and the
// later checks use what it found.
func TestOpenPortsDetectsEachPortsScheme(t *testing.T) {
	cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
	wss := testpeer.FreePort(t)
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, TLS: &cert, WebSocket: true,
		Extra: mosquittoTLSListener(wss, cert, "protocol websockets")})
	waitListening(t, wss)
	closed := testpeer.FreePort(t)
	r := audit(t, "127.0.0.1", Options{NoDefaultPorts: true, Ports: []int{m.Port, m.TLSPort, m.WSPort, wss, closed}, CAFile: cert.CAFile},
		"open-ports", "no-tls", "tls-cert")
	f, ok := finding(r, "open-ports")
	if !ok {
		t.Fatalf("no open-ports finding:\n%s", describe(r))
	}
	if f.Title != "4 ports answer, MQTT on 4" {
		t.Errorf("title %q", f.Title)
	}
	for _, tt := range []struct{ listener, line string }{
		{"plain", fmt.Sprintf("mqtt://127.0.0.1:%d: speaks MQTT, detected", m.Port)},
		{"TLS", fmt.Sprintf("mqtts://127.0.0.1:%d: speaks MQTT over TLS, detected", m.TLSPort)},
		{"WebSocket", fmt.Sprintf("ws://127.0.0.1:%d/mqtt: speaks MQTT over WebSocket, detected", m.WSPort)},
		{"secure WebSocket", fmt.Sprintf("wss://127.0.0.1:%d/mqtt: speaks MQTT over secure WebSocket, detected", wss)},
		{"closed", fmt.Sprintf("no answer: %d", closed)},
	} {
		t.Run("the "+tt.listener+" port is recognised", func(t *testing.T) {
			if !strings.Contains(f.Evidence, tt.line) {
				t.Errorf("evidence lacks %q:\n%s", tt.line, f.Evidence)
			}
		})
	}
	t.Run("no-tls sees TLS beside plaintext", func(t *testing.T) {
		if got := outcomeOf(r, "no-tls"); got != "low" {
			t.Errorf("no-tls: %s\n%s", got, describe(r))
		}
	})
	t.Run("tls-cert looks at both TLS ports' certificate", func(t *testing.T) {
		c, ok := finding(r, "tls-cert")
		want := fmt.Sprintf("served on: mqtts://127.0.0.1:%d, wss://127.0.0.1:%d/mqtt", m.TLSPort, wss)
		if !ok || c.Severity != Info || !strings.Contains(c.Evidence, want) {
			t.Errorf("tls-cert: want info with %q:\n%s", want, describe(r))
		}
	})
}

// readConnack reads what a server answers a probe's CONNECT: whatever it
// sends, it returns a return code only for a well-formed CONNACK, and
// never reads more than the packet's bounded length.
func FuzzReadConnack(f *testing.F) {
	for _, seed := range [][]byte{
		{0x20, 0x02, 0x00, 0x00},                   // 3.1.1, accepted
		{0x20, 0x02, 0x01, 0x05},                   // 3.1.1, not authorised
		{0x20, 0x03, 0x00, 0x87, 0x00},             // 5, not authorised, no properties
		{0x20, 0xff, 0xff, 0xff, 0x7f},             // a huge length
		[]byte("HTTP/1.1 400 Bad Request\r\n"),     // not MQTT
		{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46}, // a TLS alert
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		code, err := readConnack(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		if len(b) < 4 || b[0] != 0x20 {
			t.Fatalf("return code %d from %x, which is no CONNACK", code, b)
		}
		if b[1] < 0x80 && code != b[3] {
			t.Fatalf("return code %d, want the CONNACK's second byte in %x", code, b)
		}
	})
}

// A port that accepts TCP but does not speak MQTT (a web server given as
// mqtt://host:port) is not a broker: open-ports says so as high, the
// checks that need MQTT do not run against it, and anonymous-access does
// not pass for lack of an answer.
func TestAuditOfAPortThatDoesNotSpeakMQTT(t *testing.T) {
	target := brokerURL("mqtt", httpServer(t))
	t.Run("a full audit grades it D or worse", func(t *testing.T) {
		r := audit(t, target, Options{Timeout: time.Second}, Order...)
		if got := outcomeOf(r, "open-ports"); got != "high" {
			t.Errorf("open-ports: %s, want high\n%s", got, describe(r))
		}
		if r.Grade != "D" && r.Grade != "F" {
			t.Errorf("grade %s, want D or F\n%s", r.Grade, describe(r))
		}
		if s := status(r, "anonymous-access"); s.Status == StatusPassed {
			t.Errorf("anonymous-access passed against a web server\n%s", describe(r))
		}
		for _, f := range r.Findings {
			if f.ID != "open-ports" {
				t.Errorf("%s judged a port that does not speak MQTT: %s %q", f.ID, f.Severity, f.Title)
			}
		}
	})
	t.Run("anonymous-access alone fails without a CONNACK", func(t *testing.T) {
		r := audit(t, target, Options{Timeout: time.Second}, "anonymous-access")
		if s := status(r, "anonymous-access"); s.Status != StatusError || !strings.Contains(s.Note, "CONNACK") {
			t.Errorf("anonymous-access: %+v, want an error that no CONNACK came", s)
		}
	})
}
