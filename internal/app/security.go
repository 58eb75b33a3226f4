package app

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
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
	"github.com/vigilhq/vigil/internal/notify"
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
				wt.Password = os.Getenv(t.PasswordEnv)
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
		// On the blocked client's goroutine: the notifier queues.
		what := "address " + b.Key
		if b.Kind == broker.KindClient {
			what = "client id " + b.Key
		}
		why := fmt.Sprintf("%d failed logins", b.Count)
		if b.Reason == broker.ReasonFlood {
			why = fmt.Sprintf("%d messages in 3 s", b.Count)
		}
		a.Notifier.Notify(notify.Notification{Kind: notify.KindAlert, Priority: 70, URL: "/security",
			Title: "MQTT " + what + " blocked", Body: fmt.Sprintf("After %s; blocked until %s.", why, b.Until.Local().Format("15:04"))})
		a.Hub.Publish(hub.Message{Event: "block", Data: b})
	})
	a.onClose(func() error { a.Broker.SetOnBlock(nil); return nil })

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
	targets, ports := a.selfTargets()
	opts := audit.Options{
		Skip: selfAuditSkip, NoNmap: true, NoDefaultPorts: true, LocalMode: a.localMode(),
		ClientID: "vigil-self-audit", Timeout: 3 * time.Second, Log: a.log.With("component", "audit"),
	}
	if !a.mayGuess() {
		// Guessing passwords from loopback would get this host blocked.
		opts.Skip = append(opts.Skip, "weak-credentials")
	}
	// The checks run as a device would: a throwaway account with the
	// device role's ACL, so that what a device can reach is tested too.
	name := "vigil-self-audit-" + randomSuffix()
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
	for _, host := range targets {
		o := opts
		o.Ports = ports[host]
		start := time.Now()
		reports, err := audit.Run(ctx, []string{host}, o)
		if err != nil {
			return last, err
		}
		r := reports[0]
		id, err := a.Store.SaveAudit(ctx, r, trigger)
		if err != nil {
			return last, err
		}
		a.log.Info("self-audit", "target", host, "grade", r.Grade, "worst", r.Worst().String(), "findings", len(r.Findings),
			"took", time.Since(start).Round(time.Millisecond))
		last = store.AuditRecord{Report: r}
		last.ID, last.Grade, last.Target, last.Started, last.Trigger = id, r.Grade, r.Target, r.Started, trigger
	}
	a.Store.DeleteAuditsBefore(ctx, time.Now().Add(-90*24*time.Hour))
	a.Hub.Publish(hub.Message{Event: "audit", Data: map[string]any{"id": last.ID, "grade": last.Grade, "target": last.Target}})
	a.checkAlerts(ctx)
	return last, nil
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
	a.Hub.Publish(hub.Message{Event: "watch", Data: e})
	go a.checkAlerts(context.Background())
}

// securityAlerts are the alerts of the newest self-audit (each finding
// above low), of watched brokers (down, or slow) and of blocked MQTT
// clients.
func (a *App) securityAlerts(ctx context.Context, add func(id, level, title, detail string)) {
	if rec, err := a.Store.GetAudit(ctx, 0); err == nil {
		for _, f := range rec.Report.Findings {
			if f.Severity <= audit.Low {
				continue
			}
			level := "warning"
			if f.Severity >= audit.High {
				level = "critical"
			}
			add("audit:"+f.ID, level, "Security audit: "+f.Title, fmt.Sprintf("%s severity, %s; see Security", f.Severity, rec.Target))
		}
	} else if !errors.Is(err, context.Canceled) && vigil.ErrorCode(err) != vigil.ENotFound {
		a.log.Warn("read the newest audit", "error", err)
	}
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
				add("watch-latency:"+s.Target, "warning", "Broker "+s.Target+" is slow", fmt.Sprintf("round trips p50 %.0f ms", s.LatencyP50MS))
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

// mayGuess tells whether the self-audit may try passwords: the broker
// does not block loopback for failed logins (it is exempt, or blocking is
// off).
func (a *App) mayGuess() bool {
	m := a.cfg.MQTT
	if m.BlockAuthFailures == 0 {
		return true
	}
	lo := net.ParseIP("127.0.0.1")
	for _, e := range m.BlockExempt {
		if _, n, err := net.ParseCIDR(e); err == nil && n.Contains(lo) {
			return true
		}
		if ip := net.ParseIP(e); ip != nil && ip.Equal(lo) {
			return true
		}
	}
	return false
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
