package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// --fail-on high is a CI gate: it fails on a wide-open Mosquitto and
// passes on Vigil in production configuration (listeners on 0.0.0.0,
// TLS, users; audited over loopback). Without nmap the audit still runs
// and says so.
func TestAuditFailOnHigh(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	code, out, errOut := vigil(t, context.Background(), "", "audit", "--quiet", "--fail-on", "high", "--nmap", "/nonexistent/nmap",
		"--ports-only", "--ports", fmt.Sprint(m.Port), "127.0.0.1")
	if code != 1 || !strings.Contains(out, "grade F") || !strings.Contains(errOut, "at or above high (--fail-on)") {
		t.Errorf("open Mosquitto: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "nmap: not installed") {
		t.Errorf("the report does not say nmap was not used:\n%s", out)
	}

	cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
	tcp, tls := testpeer.FreePort(t), testpeer.FreePort(t)
	startVigil(t, func(cfg *conf.Config) {
		cfg.MQTT.Listen = fmt.Sprintf("0.0.0.0:%d", tcp)
		cfg.MQTT.TLSListen, cfg.MQTT.TLSCert, cfg.MQTT.TLSKey = fmt.Sprintf("0.0.0.0:%d", tls), cert.CertFile, cert.KeyFile
	})
	sarif := filepath.Join(t.TempDir(), "audit.sarif")
	code, out, errOut = vigil(t, context.Background(), "", "audit", "--quiet", "--fail-on", "high", "--no-nmap", "--ca", cert.CAFile,
		"--ports-only", "--ports", fmt.Sprintf("%d,%d", tcp, tls), "--format", "sarif", "--output", sarif, "127.0.0.1")
	if code != 0 {
		t.Errorf("Vigil in production: exit %d\n%s\n%s", code, out, errOut)
	}
	b, err := os.ReadFile(sarif)
	if err != nil {
		t.Fatal(err)
	}
	var log struct {
		Version string `json:"version"`
		Runs    []struct {
			Results []struct {
				RuleID string `json:"ruleId"`
				Level  string `json:"level"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(b, &log); err != nil || log.Version != "2.1.0" || len(log.Runs) != 1 {
		t.Fatalf("SARIF: %v %s", err, b)
	}
	for _, r := range log.Runs[0].Results {
		if r.Level == "error" || r.Level == "warning" {
			t.Errorf("Vigil in production has %s at level %s", r.RuleID, r.Level)
		}
	}
}

// A guessing rate a ticker cannot take is a usage error, said plainly,
// before anything is sent.
func TestAuditRejectsARateItCannotKeep(t *testing.T) {
	for _, rate := range []string{"1e9", "1001", "Inf", "NaN", "0", "-1"} {
		t.Run("--rate "+rate, func(t *testing.T) {
			code, _, errOut := vigil(t, context.Background(), "", "audit", "--quiet", "--rate", rate, "127.0.0.1:1")
			if code != 2 || !strings.Contains(errOut, "--rate") || !strings.Contains(errOut, "at most 1000") {
				t.Errorf("exit %d\n%s", code, errOut)
			}
		})
	}
}

// A password guessed from --passlist is named by its line in the file,
// comments and blank lines counted, and never shown.
func TestAuditNamesAGuessedPasswordByItsLine(t *testing.T) {
	const secret = "s3cret-pass-found"
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Users: map[string]string{"dev1": secret}})
	dir := t.TempDir()
	users, passes := filepath.Join(dir, "users"), filepath.Join(dir, "passwords")
	os.WriteFile(users, []byte("dev1\n"), 0o600)
	os.WriteFile(passes, []byte("# tried first\n\nwrong-one\r\n"+secret+"\n"), 0o600)
	code, out, errOut := vigil(t, context.Background(), "", "audit", "--quiet", "--no-nmap", "--checks", "weak-credentials",
		"--userlist", users, "--passlist", passes, fmt.Sprintf("127.0.0.1:%d", m.Port))
	if code != 0 || !strings.Contains(out, `user "dev1": password found: --passlist line 4`) {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, secret) {
		t.Errorf("the output shows the password:\n%s", out)
	}
}

// Flags may follow the target: they are flags, not more targets.
func TestAuditTakesFlagsAfterTheTarget(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	code, out, errOut := vigil(t, context.Background(), "", "audit", fmt.Sprintf("127.0.0.1:%d", m.Port), "--quiet", "--fail-on", "high")
	if code != 1 || !strings.Contains(errOut, "at or above high (--fail-on)") || strings.Contains(errOut, "auditing") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Count(out, "grade ") != 1 || !strings.Contains(out, "grade F") {
		t.Errorf("want one report, of the broker, graded F:\n%s", out)
	}
}

// A target or a check id the audit cannot use is a usage error, said
// before anything is sent.
func TestAuditRejectsWhatItCannotAudit(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--checks", "open-ports,nonsense", "127.0.0.1"}, `no check "nonsense"; the checks are open-ports, `},
		{[]string{"--skip", "latencies", "127.0.0.1"}, `no check "latencies"`},
		{[]string{"http://127.0.0.1"}, `scheme "http" is not one of mqtt, mqtts, ws, wss`},
		{[]string{"127.0.0.1:99999"}, "bad port"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := vigil(t, context.Background(), "", append([]string{"audit", "--quiet"}, tt.args...)...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, want 2 and %q\n%s", code, tt.want, errOut)
			}
		})
	}
}

// A broker that accepts a CONNECT and then hangs up makes checks fail to
// run. A --fail-on gate then fails, naming them; without --fail-on the
// exit code stays 0.
func TestAuditFailOnFailsWhenACheckCouldNotRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, 4096)
				n, _ := c.Read(b)
				i := bytes.Index(b[:n], []byte("MQTT"))
				if n == 0 || b[0] != 0x10 || i < 0 || i+4 >= n {
					return
				}
				if b[i+4] == 5 {
					c.Write([]byte{0x20, 3, 0, 0, 0})
				} else {
					c.Write([]byte{0x20, 2, 0, 0})
				}
				c.Read(b) // and hang up on whatever comes next
			}()
		}
	}()
	url := "mqtt://" + ln.Addr().String()
	code, out, errOut := vigil(t, context.Background(), "", "audit", url, "--quiet", "--checks", "anonymous-access,wildcard-subscribe", "--fail-on", "critical")
	if code != 1 || !strings.Contains(errOut, "1 check(s) could not run: "+url+" wildcard-subscribe (--fail-on)") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut := vigil(t, context.Background(), "", "audit", url, "--quiet", "--checks", "anonymous-access,wildcard-subscribe"); code != 0 || !strings.Contains(out, "failed wildcard-subscribe") {
		t.Errorf("without --fail-on: exit %d\n%s\n%s", code, out, errOut)
	}
}
