// Package audit diagnoses the security and availability of MQTT brokers,
// Vigil's own or anyone's, as `vigil audit` and `vigil up`'s self-audit do:
// which ports answer, TLS, anonymous access, weak credentials, what $SYS and
// wildcard subscriptions leak, ACLs, retained secrets, client-id takeover,
// what the broker accepts that the MQTT specification forbids, resource
// limits, QoS support, latency and failover between brokers; and, when
// nmap is installed, its mqtt-subscribe script's view.
//
// Each check has a stable id and gives findings, each with a severity,
// evidence and a remediation. Checks of one target share what they learn
// (the ports that answer, an identity that can connect, the topics seen)
// through an Env; they run in a fixed order (Order).
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Severity ranks a finding.
type Severity int

// Severities, from the least to the most serious.
const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = []string{"info", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < Info || s > Critical {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// ParseSeverity reads a severity name.
func ParseSeverity(v string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(v, n) {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("severity %q is not one of %s", v, strings.Join(severityNames, ", "))
}

// MarshalText writes the severity's name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity's name.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	*s = v
	return err
}

// Finding is one thing an audit found.
type Finding struct {
	ID          string   `json:"id"` // the check's id
	Severity    Severity `json:"severity"`
	Title       string   `json:"title"`       // one line
	Evidence    string   `json:"evidence"`    // what was seen, secrets redacted
	Remediation string   `json:"remediation"` // how to fix it
}

// CheckResult says how a check went.
type CheckResult struct {
	ID         string `json:"id"`
	Status     string `json:"status"`         // passed, found, skipped, error
	Note       string `json:"note,omitempty"` // why it was skipped, or its error
	DurationMS int64  `json:"duration_ms"`
}

// Check statuses.
const (
	StatusPassed  = "passed"
	StatusFound   = "found"
	StatusSkipped = "skipped"
	StatusError   = "error"
)

// Report is the audit of one target.
type Report struct {
	Target     string        `json:"target"`
	Grade      string        `json:"grade"` // A (nothing above info) to F
	Findings   []Finding     `json:"findings"`
	Checks     []CheckResult `json:"checks"`
	Broker     string        `json:"broker,omitempty"` // product and version, when known
	Nmap       string        `json:"nmap"`             // used, not installed, skipped, failed: ...
	Started    time.Time     `json:"started"`
	DurationMS int64         `json:"duration_ms"`
}

// Worst returns the most serious severity of the findings (Info if none).
func (r *Report) Worst() Severity {
	w := Info
	for _, f := range r.Findings {
		w = max(w, f.Severity)
	}
	return w
}

// Grade turns the worst severity into a grade: A nothing above info, B
// low, C medium, D high, F critical.
func Grade(worst Severity) string {
	return [...]string{"A", "B", "C", "D", "F"}[worst]
}

// Options configure an audit.
type Options struct {
	// Checks selects checks by id (nil: all); Skip removes some.
	Checks, Skip []string
	// Username and Password, if set, are the identity the checks use.
	Username, Password string
	// ClientID prefix for the audit's connections (default "vigil-audit").
	ClientID string
	// UserList and PassList extend the built-in default credentials that
	// weak-credentials tries. The evidence names a password found by
	// where it came from, PassList[i] as "--passlist line i+1": empty
	// entries hold the place of lines that are not passwords (comments).
	// CredentialBudget bounds the tries per user
	// (default 20) and CredentialRate their pace (default 20 a second, at
	// most MaxCredentialRate).
	UserList, PassList []string
	CredentialBudget   int
	CredentialRate     float64
	// CAFile trusts a CA for TLS checks and mqtts/wss connections;
	// Insecure connects over TLS without verifying (the tls-cert check
	// still reports what it sees).
	CAFile   string
	Insecure bool
	// CertName is the name clients use to reach the broker, which its
	// TLS certificate must hold (default: the target's host).
	CertName string
	// Timeout bounds each network step (default 3 s).
	Timeout time.Duration
	// Ports are extra ports open-ports tries on every target, finding out
	// which of MQTT, MQTT over TLS, WebSocket or secure WebSocket each
	// speaks; NoDefaultPorts leaves out a bare host's usual ports (tests,
	// and `--ports-only`).
	Ports          []int
	NoDefaultPorts bool
	// NoNmap skips nmap; Nmap is its path (default: looked up in PATH).
	NoNmap bool
	Nmap   string
	// LocalMode says the target is Vigil in local mode (its own
	// self-audit): anonymous access on loopback is expected, and reported
	// as such.
	LocalMode bool
	// Progress, if set, is told of each check as it starts.
	Progress func(target, check string, i, n int)
	Log      *slog.Logger
	// Now tells the time (certificate expiry; tests set it).
	Now func() time.Time
}

// MaxCredentialRate is the most tries a second weak-credentials makes;
// a higher Options.CredentialRate is taken as this.
const MaxCredentialRate = 1000

func (o *Options) defaults() {
	if o.ClientID == "" {
		o.ClientID = "vigil-audit"
	}
	if o.CredentialBudget <= 0 {
		o.CredentialBudget = 20
	}
	switch r := o.CredentialRate; {
	case r > MaxCredentialRate: // +Inf too
		o.CredentialRate = MaxCredentialRate
	case !(r > 0): // NaN, -Inf too
		o.CredentialRate = 20
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Check is one diagnostic.
type Check struct {
	ID    string
	Title string // what it checks, for --help and the report
	// Run probes the target and returns findings; an error means the check
	// could not run (reported, not a finding). ErrSkip skips it.
	Run func(ctx context.Context, env *Env) ([]Finding, error)
	// Multi checks look at all the targets at once (failover); Run then
	// gets the Env of the first target and env.All holds every one.
	Multi bool
}

// SkipError skips a check, saying why.
type SkipError struct{ Why string }

func (e *SkipError) Error() string { return e.Why }

// Skip returns a SkipError.
func Skip(format string, args ...any) error { return &SkipError{Why: fmt.Sprintf(format, args...)} }

// checks are all the checks, in the order they run: later checks use
// what earlier ones learnt (the ports that answer, an identity, the
// topics seen).
var checks = []*Check{
	&Check{ID: "open-ports", Title: "Which MQTT ports answer", Run: checkOpenPorts},
	&Check{ID: "no-tls", Title: "MQTT is reachable without TLS", Run: checkNoTLS},
	&Check{ID: "tls-weak", Title: "TLS accepts old versions or weak cipher suites", Run: checkTLSWeak},
	&Check{ID: "tls-cert", Title: "The TLS certificate is expired, for another host, untrusted or expiring", Run: checkTLSCert},
	&Check{ID: "anonymous-access", Title: "Clients without a username can connect", Run: checkAnonymous},
	&Check{ID: "weak-credentials", Title: "Default or weak usernames and passwords work", Run: checkWeakCredentials},
	&Check{ID: "broker-fingerprint", Title: "Broker product and version", Run: checkFingerprint},
	&Check{ID: "sys-topics-exposed", Title: "$SYS topics can be read", Run: checkSysExposed},
	&Check{ID: "wildcard-subscribe", Title: "Subscribing to # is allowed", Run: checkWildcard},
	&Check{ID: "retained-leak", Title: "Retained messages hold sensitive data", Run: checkRetainedLeak},
	&Check{ID: "sys-publish", Title: "Publishing to $SYS topics is allowed", Run: checkSysPublish},
	&Check{ID: "acl-publish", Title: "This identity can publish to other clients' topics", Run: checkACLPublish},
	&Check{ID: "client-id-takeover", Title: "A second connection with a client id disconnects the first", Run: checkClientIDTakeover},
	&Check{ID: "invalid-topic", Title: "Wildcards in topic names and malformed topic filters are accepted", Run: checkInvalidTopic},
	&Check{ID: "invalid-utf8", Title: "Topic names that are not valid UTF-8 are accepted", Run: checkInvalidUTF8},
	&Check{ID: "invalid-qos", Title: "QoS 3 is accepted in PUBLISH or SUBSCRIBE", Run: checkInvalidQoS},
	&Check{ID: "max-payload", Title: "The broker has a message size limit", Run: checkMaxPayload},
	&Check{ID: "slow-connect", Title: "The broker drops connections that send no CONNECT", Run: checkSlowConnect},
	&Check{ID: "qos-support", Title: "QoS 0, 1 and 2 are delivered as asked", Run: checkQoS},
	&Check{ID: "latency", Title: "Round-trip latency and loss at each QoS", Run: checkLatency},
	&Check{ID: "nmap", Title: "What nmap's mqtt-subscribe script sees", Run: checkNmap},
	&Check{ID: "failover", Title: "Clients can move between the brokers of one deployment", Run: checkFailover, Multi: true},
}

// Order is the checks' ids in the order they run.
var Order = func() []string {
	ids := make([]string, len(checks))
	for i, c := range checks {
		ids[i] = c.ID
	}
	return ids
}()

// Checks returns the checks in the order they run.
func Checks() []*Check { return slices.Clone(checks) }

// Validate checks what Run would refuse before it sends anything: each
// target must parse (ParseTarget) and each id of Options.Checks and
// Options.Skip must name a check.
func Validate(targets []string, opts Options) error {
	for _, t := range targets {
		if _, err := ParseTarget(t); err != nil {
			return err
		}
	}
	known := map[string]bool{}
	for _, c := range Checks() {
		known[c.ID] = true
	}
	for _, id := range append(slices.Clone(opts.Checks), opts.Skip...) {
		if !known[id] {
			return fmt.Errorf("no check %q; the checks are %s", id, strings.Join(Order, ", "))
		}
	}
	return nil
}

// selected returns the checks the options ask for.
func selected(o *Options) []*Check {
	var out []*Check
	for _, c := range Checks() {
		if (len(o.Checks) == 0 || slices.Contains(o.Checks, c.ID)) && !slices.Contains(o.Skip, c.ID) {
			out = append(out, c)
		}
	}
	return out
}

// Run audits each target (a URL, or a bare host for the usual ports) and
// returns a report per target, in order. What Validate refuses is an
// error before anything is sent.
func Run(ctx context.Context, targets []string, opts Options) ([]*Report, error) {
	if err := Validate(targets, opts); err != nil {
		return nil, err
	}
	opts.defaults()
	checks := selected(&opts)
	var envs []*Env
	for _, t := range targets {
		tg, err := ParseTarget(t)
		if err != nil {
			return nil, err
		}
		env, err := newEnv(tg, &opts)
		if err != nil {
			return nil, err
		}
		envs = append(envs, env)
	}
	for _, e := range envs {
		e.All = envs
	}
	for _, env := range envs {
		for i, c := range checks {
			if c.Multi {
				continue
			}
			if opts.Progress != nil {
				opts.Progress(env.Target.Input, c.ID, i+1, len(checks))
			}
			env.run(ctx, c)
		}
	}
	// Multi-target checks run once, on the first target's report.
	for i, c := range checks {
		if c.Multi && len(envs) > 0 {
			if opts.Progress != nil {
				opts.Progress(envs[0].Target.Input, c.ID, i+1, len(checks))
			}
			envs[0].run(ctx, c)
		}
	}
	reports := make([]*Report, len(envs))
	for i, env := range envs {
		r := env.report
		r.DurationMS = time.Since(r.Started).Milliseconds()
		slices.SortStableFunc(r.Findings, func(a, b Finding) int {
			if a.Severity != b.Severity {
				return int(b.Severity) - int(a.Severity)
			}
			return slices.Index(Order, a.ID) - slices.Index(Order, b.ID)
		})
		r.Grade = Grade(r.Worst())
		reports[i] = r
	}
	return reports, ctx.Err()
}

// run runs one check on a target and records its outcome.
func (env *Env) run(ctx context.Context, c *Check) {
	start := time.Now()
	res := CheckResult{ID: c.ID}
	if ctx.Err() != nil {
		res.Status, res.Note = StatusSkipped, "the audit was interrupted"
		env.report.Checks = append(env.report.Checks, res)
		return
	}
	findings, err := c.Run(ctx, env)
	res.DurationMS = time.Since(start).Milliseconds()
	var skip *SkipError
	switch {
	case errors.As(err, &skip):
		res.Status, res.Note = StatusSkipped, skip.Why
	case err != nil:
		res.Status, res.Note = StatusError, err.Error()
		env.Opts.Log.Warn("audit check failed", "target", env.Target.Input, "check", c.ID, "error", err)
	case len(findings) > 0:
		res.Status = StatusFound
	default:
		res.Status = StatusPassed
	}
	for i := range findings {
		findings[i].ID = c.ID
	}
	env.report.Findings = append(env.report.Findings, findings...)
	env.report.Checks = append(env.report.Checks, res)
}
