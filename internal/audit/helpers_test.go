package audit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
)

// memUsers is a user store for an in-process Vigil broker.
type memUsers map[string]*users.User

func (m memUsers) GetUser(_ context.Context, name string) (*users.User, error) {
	if u, ok := m[name]; ok {
		return u, nil
	}
	return nil, vigil.Errorf(vigil.ENotFound, "no user %q", name)
}

// vigilBroker is Vigil's broker, in-process.
type vigilBroker struct {
	*broker.Server
	Port, TLSPort int
	CAFile        string
}

// startVigil starts Vigil's broker. In production mode its listeners
// bind 0.0.0.0 (tests connect over loopback), it has a TLS listener with
// a test certificate, and no anonymous access; otherwise it is Vigil's
// local mode: loopback only, anonymous allowed.
func startVigil(t testing.TB, production bool, accounts map[string]string) *vigilBroker {
	t.Helper()
	c := conf.New().MQTT
	c.WSListen, c.Persistence = "", false
	c.SysInterval = time.Second
	host := "127.0.0.1"
	if production {
		host = "0.0.0.0"
	}
	vb := &vigilBroker{Port: testpeer.FreePort(t)}
	c.Listen = fmt.Sprintf("%s:%d", host, vb.Port)
	if production {
		cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
		vb.TLSPort, vb.CAFile = testpeer.FreePort(t), cert.CAFile
		c.TLSListen, c.TLSCert, c.TLSKey = fmt.Sprintf("%s:%d", host, vb.TLSPort), cert.CertFile, cert.KeyFile
	}
	store := memUsers{}
	for name, pw := range accounts {
		h, err := users.HashPassword(pw, 4)
		if err != nil {
			t.Fatal(err)
		}
		role := users.RoleDevice
		if name == "admin" {
			role = users.RoleAdmin
		}
		pub, sub := users.DefaultACL(role)
		store[name] = &users.User{Name: name, Role: role, PasswordHash: h, Publish: pub, Subscribe: sub}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := broker.Open(broker.Config{MQTT: c, DataDir: t.TempDir()}, users.NewVerifier(store, time.Minute, 4), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	vb.Server = b
	return vb
}

// brokerURL is a loopback URL of one of a test broker's ports.
func brokerURL(scheme string, port int) string { return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port) }

// audit runs the given checks (all if none) on one target.
func audit(t testing.TB, target string, o Options, checks ...string) *Report {
	t.Helper()
	o.Checks = checks
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	o.NoNmap = o.NoNmap || !slices.Contains(checks, "nmap")
	rs, err := Run(context.Background(), []string{target}, o)
	if err != nil {
		t.Fatal(err)
	}
	return rs[0]
}

// ids lists the findings' ids above a severity, sorted.
func ids(r *Report, above Severity) []string {
	var out []string
	for _, f := range r.Findings {
		if f.Severity > above {
			out = append(out, f.ID)
		}
	}
	sort.Strings(out)
	return out
}

// finding returns the finding of a check, if any.
func finding(r *Report, id string) (Finding, bool) {
	for _, f := range r.Findings {
		if f.ID == id {
			return f, true
		}
	}
	return Finding{}, false
}

// status returns how a check went.
func status(r *Report, id string) CheckResult {
	for _, c := range r.Checks {
		if c.ID == id {
			return c
		}
	}
	return CheckResult{}
}

// describe prints a report for a failing test.
func describe(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s grade %s broker %q\n", r.Target, r.Grade, r.Broker)
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "  %-8s %-20s %s | %s\n", f.Severity, f.ID, f.Title, strings.ReplaceAll(f.Evidence, "\n", " / "))
	}
	for _, c := range r.Checks {
		if c.Status == StatusSkipped || c.Status == StatusError {
			fmt.Fprintf(&b, "  (%s %s: %s)\n", c.ID, c.Status, c.Note)
		}
	}
	return b.String()
}
