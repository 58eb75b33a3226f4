package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/app"
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
	cfg := conf.New()
	cfg.Data.Dir = t.TempDir()
	cfg.MQTT.Listen, cfg.MQTT.WSListen, cfg.HTTP.Listen = fmt.Sprintf("0.0.0.0:%d", tcp), "", "127.0.0.1:0"
	cfg.MQTT.TLSListen, cfg.MQTT.TLSCert, cfg.MQTT.TLSKey = fmt.Sprintf("0.0.0.0:%d", tls), cert.CertFile, cert.KeyFile
	cfg.Auth.BcryptCost = 4
	a, err := app.Open(context.Background(), cfg, app.Options{AdminPassword: "admin-password-1", Out: io.Discard}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
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
