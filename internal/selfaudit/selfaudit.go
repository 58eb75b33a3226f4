// Package selfaudit is vigil up's audit of its own broker: a run audits
// every MQTT listener as a device would, stores the reports and turns the
// findings into alerts; a schedule runs it after start and then every
// audit.every.
package selfaudit

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/audit"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/users"
)

// skip are the checks the self-audit leaves out: it never writes to other
// clients' topics (acl-publish), has one deployment only (failover), and
// does not run external programs (nmap).
var skip = []string{"acl-publish", "failover", "nmap"}

// ErrRunning is returned when an audit is already under way.
var ErrRunning = vigil.Errorf(vigil.EConflict, "an audit is already running")

// Config is what an Auditor needs.
type Config struct {
	MQTT      conf.MQTT  // the listeners' policy: anonymous access, TLS, blocking
	Schedule  conf.Audit // when to run
	PublicURL string     // http.public_url: the name clients use for the broker
	// Broker is the embedded broker; nil on an external broker, which is
	// audited at MQTT.URLs as an outsider sees it: without a login, and
	// without guessing passwords on a broker that is not Vigil's.
	Broker *broker.Server
	Store  *store.Store
	Log    *slog.Logger
	// Ran is called after each run with its newest record.
	Ran func(ctx context.Context, last store.AuditRecord)
}

// Auditor runs the self-audit and keeps the alerts of its newest run.
type Auditor struct {
	cfg     Config
	running sync.Mutex

	mu     sync.Mutex
	alerts []alert.Alert

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns an Auditor holding the alerts of the stored newest audit of
// each listener address, so that they hold from the start.
func New(ctx context.Context, cfg Config) *Auditor {
	a := &Auditor{cfg: cfg}
	hosts, _ := a.targets()
	recent, err := cfg.Store.ListAudits(ctx, 100)
	if err != nil {
		cfg.Log.Warn("read the newest audits", "error", err)
		return a
	}
	var reports []*audit.Report
	for _, host := range hosts {
		for _, sum := range recent { // newest first
			if sum.Target != host {
				continue
			}
			if rec, err := cfg.Store.GetAudit(ctx, sum.ID); err == nil {
				reports = append(reports, rec.Report)
			}
			break
		}
	}
	a.setAlerts(reports)
	return a
}

// Start runs the schedule until Close: the first audit a few seconds
// after start (when the demo fleet and agents are up) unless
// audit.on_start is off, then every audit.every (0: never).
func (a *Auditor) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Go(func() {
		c := a.cfg.Schedule
		next, trigger := 5*time.Second, "start"
		if !c.OnStart {
			next = c.Every
		}
		for next > 0 {
			t := time.NewTimer(next)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if _, err := a.Run(ctx, trigger); err != nil && ctx.Err() == nil {
				a.cfg.Log.Warn("self-audit failed", "error", err)
			}
			next, trigger = c.Every, "scheduled"
		}
	})
}

// Close stops the schedule and waits for a run under way to end.
func (a *Auditor) Close() error {
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	return nil
}

// Run audits the broker's own MQTT listeners, stores the reports and
// updates the alerts; it returns the newest audit, or ErrRunning.
func (a *Auditor) Run(ctx context.Context, trigger string) (store.AuditRecord, error) {
	if !a.running.TryLock() {
		return store.AuditRecord{}, ErrRunning
	}
	defer a.running.Unlock()
	b := a.cfg.Broker
	targets, ports := a.targets()
	opts := audit.Options{
		Skip: skip, NoNmap: true, NoDefaultPorts: true, LocalMode: a.localMode(),
		Timeout: 3 * time.Second, Log: a.cfg.Log,
	}
	if b == nil {
		opts.Skip = append(slices.Clip(opts.Skip), "weak-credentials")
		opts.CAFile = a.cfg.MQTT.CA
	} else {
		defer b.EndSelfAudit()
		opts.ClientID = b.BeginSelfAudit()
		// The checks run as a device would: a throwaway account with the
		// device role's ACL, so that what a device can reach is tested
		// too.
		name := "vigil-self-audit-" + rnd.Hex(4)
		pub, sub := users.DefaultACL(users.RoleDevice)
		opts.Username, opts.Password = name, users.RandomPassword()
		b.AddCredential(name, opts.Password, &users.User{Name: name, Role: users.RoleDevice, Publish: pub, Subscribe: sub})
		defer b.RemoveCredential(name)
		if a.cfg.MQTT.TLSListen != "" {
			// Devices are given the broker's certificate (or its CA); the
			// name they use is the public URL's, else one the certificate
			// names.
			opts.CAFile = a.cfg.MQTT.TLSCert
			opts.CertName = a.certName()
		}
	}
	var last store.AuditRecord
	var reports []*audit.Report
	for _, host := range targets {
		o := opts
		o.Ports = ports[host]
		if b != nil && !a.mayGuess(host) {
			// Guessing passwords from this address would get the host
			// blocked.
			o.Skip = append(slices.Clip(o.Skip), "weak-credentials")
		}
		start := time.Now()
		rs, err := audit.Run(ctx, []string{host}, o)
		if err != nil {
			return last, err
		}
		r := rs[0]
		reports = append(reports, r)
		id, err := a.cfg.Store.SaveAudit(ctx, r, trigger)
		if err != nil {
			return last, err
		}
		// The broker logged the probes it refused at debug: they are the
		// audit's own, not attacks. One line says how many.
		var refused, violations int64
		if b != nil {
			refused, violations = b.TakeSelfAuditCounts()
		}
		a.cfg.Log.Info("self-audit", "target", host, "grade", r.Grade, "worst", r.Worst().String(), "findings", len(r.Findings),
			"took", time.Since(start).Round(time.Millisecond), "probes_refused", refused, "protocol_violations_provoked", violations)
		last = store.AuditRecord{Report: r}
		last.ID, last.Grade, last.Target, last.Started, last.Trigger = id, r.Grade, r.Target, r.Started, trigger
	}
	a.cfg.Store.DeleteAuditsBefore(ctx, time.Now().Add(-90*24*time.Hour))
	a.setAlerts(reports)
	if a.cfg.Ran != nil {
		a.cfg.Ran(ctx, last)
	}
	return last, nil
}

// Alerts makes the auditor an alert source: the findings above low of its
// newest run, one per check, target and severity.
func (a *Auditor) Alerts(context.Context) []alert.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.alerts)
}

// setAlerts makes the findings above low of one run (a report per
// listener address) the alerts.
func (a *Auditor) setAlerts(reports []*audit.Report) {
	var list []alert.Alert
	seen := map[string]int{}
	for _, r := range reports {
		for _, f := range r.Findings { // most severe first
			if f.Severity <= audit.Low {
				continue
			}
			al := alert.New(alert.KindAudit, f.ID+":"+f.Severity.String()+":"+r.Target, alert.Warning,
				"Security audit: "+f.Title, fmt.Sprintf("%s severity, %s; see Security", f.Severity, r.Target))
			if i, ok := seen[al.ID]; ok {
				list[i].Detail = fmt.Sprintf("%s severity, %s, and more like it; see Security", f.Severity, r.Target)
				continue
			}
			if f.Severity >= audit.High {
				al.Level = alert.Critical
			}
			al.Link = "/security"
			seen[al.ID] = len(list)
			list = append(list, al)
		}
	}
	a.mu.Lock()
	a.alerts = list
	a.mu.Unlock()
}

// targets are the hosts to audit (loopback for listeners on every
// address) and their MQTT ports.
func (a *Auditor) targets() ([]string, map[string][]int) {
	if a.cfg.Broker == nil {
		return a.cfg.MQTT.URLs, nil
	}
	ports := map[string][]int{}
	var hosts []string
	for _, kind := range []string{broker.TCP, broker.TLS, broker.WS} {
		addr, ok := a.cfg.Broker.Addr(kind).(*net.TCPAddr)
		if !ok || addr == nil {
			continue
		}
		host := addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
		if _, seen := ports[host]; !seen {
			hosts = append(hosts, host)
		}
		ports[host] = append(ports[host], addr.Port)
	}
	return hosts, ports
}

// localMode: every listener is on loopback and anonymous clients are
// allowed there.
func (a *Auditor) localMode() bool {
	if a.cfg.Broker == nil || a.cfg.MQTT.Anonymous != conf.AnonymousLoopback {
		return false
	}
	for _, kind := range []string{broker.TCP, broker.TLS, broker.WS} {
		if addr, ok := a.cfg.Broker.Addr(kind).(*net.TCPAddr); ok && addr != nil && !addr.IP.IsLoopback() {
			return false
		}
	}
	return true
}

// certName is the name clients use for the broker: http.public_url's
// host, else the first name the certificate holds.
func (a *Auditor) certName() string {
	if u, err := url.Parse(a.cfg.PublicURL); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	b, err := os.ReadFile(a.cfg.MQTT.TLSCert)
	if err != nil {
		return ""
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return ""
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	switch {
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	}
	return ""
}

// mayGuess tells whether the self-audit may try passwords against host:
// the broker does not block that address for failed logins (it is exempt,
// or blocking is off).
func (a *Auditor) mayGuess(host string) bool {
	m := a.cfg.MQTT
	if m.BlockAuthFailures == 0 {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range m.BlockExemptPrefixes() {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
