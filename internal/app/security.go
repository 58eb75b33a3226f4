package app

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/audit"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/users"
	"github.com/vigilhq/vigil/internal/watch"
)

// selfAuditSkip are the checks vigil up's self-audit leaves out: it never
// writes to other clients' topics (acl-publish), has one deployment only
// (failover), and does not run external programs (nmap).
var selfAuditSkip = []string{"acl-publish", "failover", "nmap"}

// openSecurity starts the watcher of configured brokers, the self-audit
// schedule, and turns the broker's blocks into notifications.
func (a *App) openSecurity(ctx context.Context) error {
	w := a.cfg.Watch
	if len(w.Targets) > 0 {
		var targets []watch.Target
		for _, t := range w.Targets {
			wt := watch.Target{Name: t.Name, URL: t.URL, Username: t.Username, CAFile: t.CA, Insecure: t.Insecure}
			if t.PasswordEnv != "" {
				var ok bool
				if wt.Password, ok = os.LookupEnv(t.PasswordEnv); !ok {
					return fmt.Errorf("watch target %q: password_env %s is not set", cmp.Or(t.Name, t.URL), t.PasswordEnv)
				}
			}
			targets = append(targets, wt)
		}
		var err error
		if a.Watcher, err = watch.New(watch.Config{Targets: targets, Interval: w.Interval, Timeout: w.Timeout, Latency: w.Latency},
			a.Store, a.onWatchEvent, a.log.With("component", "watch"), a.Registry); err != nil {
			return err
		}
		a.Watcher.Start()
		a.onClose(a.Watcher.Close)
	}
	a.Broker.SetOnBlock(func(b broker.Block) {
		// On the blocked client's goroutine. The "blocks" alert tells
		// people once while any block lasts, however many follow.
		a.Hub.Publish(hub.Message{Event: hub.EventBlock, Data: b})
		a.kickAlerts()
	})
	a.onClose(func() error { a.Broker.SetOnBlock(nil); return nil })

	a.loadAuditAlerts(ctx)
	actx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.auditSchedule(actx) })
	a.onClose(func() error { cancel(); wg.Wait(); return nil })
	return nil
}

// auditSchedule runs the self-audit a few seconds after start (when the
// demo fleet and agents are up) and then every audit.every.
func (a *App) auditSchedule(ctx context.Context) {
	c := a.cfg.Audit
	next := 5 * time.Second
	if !c.OnStart {
		next = c.Every
	}
	trigger := "start"
	for next > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
		if _, err := a.RunAudit(ctx, trigger); err != nil && ctx.Err() == nil {
			a.log.Warn("self-audit failed", "error", err)
		}
		next, trigger = c.Every, "scheduled"
	}
}

// ErrAuditRunning is returned when an audit is already under way.
var ErrAuditRunning = vigil.Errorf(vigil.EConflict, "an audit is already running")

// RunAudit audits vigil up's own MQTT listeners, stores the reports and
// updates the alerts; it returns the newest audit.
func (a *App) RunAudit(ctx context.Context, trigger string) (store.AuditRecord, error) {
	if !a.auditMu.TryLock() {
		return store.AuditRecord{}, ErrAuditRunning
	}
	defer a.auditMu.Unlock()
	defer a.Broker.EndSelfAudit()
	targets, ports := a.selfTargets()
	opts := audit.Options{
		Skip: selfAuditSkip, NoNmap: true, NoDefaultPorts: true, LocalMode: a.localMode(),
		ClientID: a.Broker.BeginSelfAudit(), Timeout: 3 * time.Second, Log: a.log.With("component", "audit"),
	}
	// The checks run as a device would: a throwaway account with the
	// device role's ACL, so that what a device can reach is tested too.
	name := "vigil-self-audit-" + rnd.Hex(4)
	pub, sub := users.DefaultACL(users.RoleDevice)
	opts.Username, opts.Password = name, users.RandomPassword()
	a.Broker.AddCredential(name, opts.Password, &users.User{Name: name, Role: users.RoleDevice, Publish: pub, Subscribe: sub})
	defer a.Broker.RemoveCredential(name)
	if a.cfg.MQTT.TLSListen != "" {
		// Devices are given the broker's certificate (or its CA); the
		// name they use is the public URL's, else one the certificate
		// names.
		opts.CAFile = a.cfg.MQTT.TLSCert
		opts.CertName = a.certName()
	}
	var last store.AuditRecord
	var reports []*audit.Report
	for _, host := range targets {
		o := opts
		o.Ports = ports[host]
		if !a.mayGuess(host) {
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
		id, err := a.Store.SaveAudit(ctx, r, trigger)
		if err != nil {
			return last, err
		}
		// The broker logged the probes it refused at debug: they are the
		// audit's own, not attacks. One line says how many.
		refused, violations := a.Broker.TakeSelfAuditCounts()
		a.log.Info("self-audit", "target", host, "grade", r.Grade, "worst", r.Worst().String(), "findings", len(r.Findings),
			"took", time.Since(start).Round(time.Millisecond), "probes_refused", refused, "protocol_violations_provoked", violations)
		last = store.AuditRecord{Report: r}
		last.ID, last.Grade, last.Target, last.Started, last.Trigger = id, r.Grade, r.Target, r.Started, trigger
	}
	a.Store.DeleteAuditsBefore(ctx, time.Now().Add(-90*24*time.Hour))
	a.setAuditAlerts(reports)
	a.Hub.Publish(hub.Message{Event: hub.EventAudit, Data: hub.Audit{ID: last.ID, Grade: last.Grade, Target: last.Target}})
	a.checkAlerts(ctx)
	return last, nil
}

// auditAlerts are the alerts of the newest self-audit of each listener
// address: one per check, target and severity.
type auditAlerts struct {
	mu   sync.Mutex
	list []Alert
}

// setAuditAlerts makes the findings above low of one self-audit run (a
// report per listener address) the audit's alerts.
func (a *App) setAuditAlerts(reports []*audit.Report) {
	var list []Alert
	seen := map[string]int{}
	for _, r := range reports {
		for _, f := range r.Findings { // most severe first
			if f.Severity <= audit.Low {
				continue
			}
			id := "audit:" + f.ID + ":" + f.Severity.String() + ":" + r.Target
			if i, ok := seen[id]; ok {
				list[i].Detail = fmt.Sprintf("%s severity, %s, and more like it; see Security", f.Severity, r.Target)
				continue
			}
			level := "warning"
			if f.Severity >= audit.High {
				level = "critical"
			}
			seen[id] = len(list)
			list = append(list, Alert{ID: id, Level: level, Title: "Security audit: " + f.Title,
				Detail: fmt.Sprintf("%s severity, %s; see Security", f.Severity, r.Target)})
		}
	}
	a.auditAlerts.mu.Lock()
	a.auditAlerts.list = list
	a.auditAlerts.mu.Unlock()
}

// loadAuditAlerts takes the alerts of the stored newest self-audit of each
// listener address, so that they hold from the start.
func (a *App) loadAuditAlerts(ctx context.Context) {
	hosts, _ := a.selfTargets()
	recent, err := a.Store.ListAudits(ctx, 100)
	if err != nil {
		a.log.Warn("read the newest audits", "error", err)
		return
	}
	var reports []*audit.Report
	for _, host := range hosts {
		for _, sum := range recent { // newest first
			if sum.Target != host {
				continue
			}
			if rec, err := a.Store.GetAudit(ctx, sum.ID); err == nil {
				reports = append(reports, rec.Report)
			}
			break
		}
	}
	a.setAuditAlerts(reports)
}

// selfTargets are the hosts to audit (loopback for listeners on every
// address) and their MQTT ports.
func (a *App) selfTargets() ([]string, map[string][]int) {
	ports := map[string][]int{}
	var hosts []string
	for _, kind := range []string{broker.TCP, broker.TLS, broker.WS} {
		addr, ok := a.Broker.Addr(kind).(*net.TCPAddr)
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
func (a *App) localMode() bool {
	if a.cfg.MQTT.Anonymous != conf.AnonymousLoopback {
		return false
	}
	for _, kind := range []string{broker.TCP, broker.TLS, broker.WS} {
		if addr, ok := a.Broker.Addr(kind).(*net.TCPAddr); ok && addr != nil && !addr.IP.IsLoopback() {
			return false
		}
	}
	return true
}

// certName is the name clients use for the broker: http.public_url's
// host, else the first name the certificate holds.
func (a *App) certName() string {
	if u, err := url.Parse(a.cfg.HTTP.PublicURL); err == nil && u.Hostname() != "" {
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

// onWatchEvent hears the watcher: outages and latency breaches become
// alerts (checkAlerts notifies them once); every event goes to the UI.
func (a *App) onWatchEvent(e watch.Event) {
	a.Hub.Publish(hub.Message{Event: hub.EventWatch, Data: e})
	a.kickAlerts()
}

// securityAlerts are the alerts of the newest self-audit (each finding
// above low), of watched brokers (down, or slow) and of blocked MQTT
// clients.
func (a *App) securityAlerts(add func(id, level, title, detail string)) {
	a.auditAlerts.mu.Lock()
	for _, al := range a.auditAlerts.list {
		add(al.ID, al.Level, al.Title, al.Detail)
	}
	a.auditAlerts.mu.Unlock()
	if a.Watcher != nil {
		for _, s := range a.Watcher.Status() {
			switch {
			case s.Probes > 0 && !s.Up:
				detail := ""
				if s.LastProbe != nil {
					detail = s.LastProbe.Error
				}
				add("watch:"+s.Target, "critical", "Broker "+s.Target+" is down", detail)
			case s.LatencyBreach:
				detail := fmt.Sprintf("round trips above %s", a.cfg.Watch.Latency)
				if s.LastProbe != nil {
					detail = fmt.Sprintf("round trip %.0f ms, above %s", s.LastProbe.RoundTripMS, a.cfg.Watch.Latency)
				}
				add("watch-latency:"+s.Target, "warning", "Broker "+s.Target+" is slow", detail)
			}
		}
	}
	if blocks := a.Broker.Blocks(); len(blocks) > 0 {
		var keys []string
		for _, b := range blocks {
			keys = append(keys, b.Key)
		}
		sort.Strings(keys)
		add("blocks", "warning", strconv.Itoa(len(blocks))+" MQTT clients or addresses are blocked", strings.Join(keys, ", "))
	}
	if slow := a.Broker.SlowSubscribers(); len(slow) > 0 {
		var who []string
		for _, s := range slow {
			w := s.ClientID
			if s.Username != "" {
				w += " (" + s.Username + ")"
			}
			who = append(who, fmt.Sprintf("%s: %d dropped", w, s.Dropped))
		}
		add("slow_subscribers", "warning", strconv.Itoa(len(slow))+" MQTT subscribers are losing messages: they do not keep up",
			strings.Join(who, ", ")+" (mqtt.max_queued_messages)")
	}
}

// securityAPI is what the HTTP API serves of the security side.
type securityAPI struct{ *App }

func (s securityAPI) ListAudits(ctx context.Context, limit int) ([]store.AuditSummary, error) {
	return s.Store.ListAudits(ctx, limit)
}

func (s securityAPI) GetAudit(ctx context.Context, id int64) (store.AuditRecord, error) {
	return s.Store.GetAudit(ctx, id)
}

func (s securityAPI) WatchStatus() []watch.Status {
	if s.Watcher == nil {
		return nil
	}
	return s.Watcher.Status()
}

func (s securityAPI) Blocks() []broker.Block { return s.Broker.Blocks() }

func (s securityAPI) Unblock(key string) bool { return s.Broker.Unblock(key) }

// mayGuess tells whether the self-audit may try passwords against host:
// the broker does not block that address for failed logins (it is exempt,
// or blocking is off).
func (a *App) mayGuess(host string) bool {
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
