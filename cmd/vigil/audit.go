package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/vigilhq/vigil/internal/audit"
	"github.com/vigilhq/vigil/internal/measure"
	"github.com/vigilhq/vigil/internal/version"
)

type auditFlags struct {
	username, password, ca, name string
	insecure, noNmap, portsOnly  bool
	format, output, failOn       string
	checks, skip, ports          string
	userlist, passlist, nmapPath string
	budget                       int
	rate                         float64
	timeout                      time.Duration
	quiet                        bool
}

var auditCommand = &command{
	name:    "audit",
	summary: "diagnose the security and availability of MQTT brokers (Vigil's or any)",
	usage:   "audit [flags] URL|HOST [URL|HOST...]",
	help: `
Audits MQTT brokers in one run: which ports answer, TLS (versions, ciphers,
certificate), anonymous access, default and weak passwords, what $SYS and
wildcard subscriptions leak, ACLs, sensitive retained messages, client-id
takeover, what the broker accepts that MQTT forbids, resource limits, QoS
support and latency, and, given several URLs of one deployment, failover
between them. When nmap is installed its mqtt-subscribe script's view is
merged in. Each finding has a severity, evidence (secrets redacted) and a
fix; each target gets a grade from A (nothing above info) to F.

A target is a URL (mqtt://, mqtts://, ws://, wss://) or a bare host, for
which the usual ports are tried (1883, 8883, 80, 443, 8080, 8083, 8084,
9001). Some checks write to the broker: short probe messages on the topics
they test, never retained (docs/audit.md lists what each check sends).
Audit only brokers you may test.

--fail-on SEVERITY makes the exit code 1 when a finding is at or above it,
or when a check could not run, for CI gates. Output formats: text (default), json, sarif (for
code-scanning) and html (a standalone report).`,
	examples: `  vigil audit 127.0.0.1                              # the usual ports of this host
  vigil audit mqtt://broker.lan:1883 --username dev1  # as a device (password: $VIGIL_MQTT_PASSWORD)
  vigil audit mqtts://broker.example:8883 --ca ca.pem --fail-on high
  vigil audit --format sarif --output audit.sarif mqtt://broker.lan
  vigil audit --format html --output report.html broker-a.lan broker-b.lan   # failover too
  vigil audit --checks anonymous-access,weak-credentials --passlist passwords.txt mqtt://broker.lan`,
	flags: func(fs *flag.FlagSet) any {
		f := &auditFlags{}
		fs.StringVar(&f.username, "username", "", "audit as this MQTT user (default: anonymous, or a weak password found)")
		fs.StringVar(&f.password, "password", "", "its password (or $VIGIL_MQTT_PASSWORD)")
		fs.StringVar(&f.ca, "ca", "", "CA certificate (PEM) that TLS certificates should chain to")
		fs.BoolVar(&f.insecure, "insecure", false, "connect over TLS without verifying certificates (tls-cert still reports them)")
		fs.StringVar(&f.name, "cert-name", "", "the name clients use for the broker, which its certificate must hold (default: the host audited)")
		fs.StringVar(&f.format, "format", "text", "output format: text, json, sarif or html")
		fs.StringVar(&f.output, "output", "", "write the report to this file (default: standard output)")
		fs.StringVar(&f.failOn, "fail-on", "", "exit 1 when a finding is at or above this severity (critical, high, medium, low or info), or a check could not run")
		fs.StringVar(&f.checks, "checks", "", "run only these checks (comma-separated ids; see docs/audit.md)")
		fs.StringVar(&f.skip, "skip", "", "skip these checks (comma-separated ids)")
		fs.StringVar(&f.ports, "ports", "", "also try these ports (comma-separated); what each speaks is found out")
		fs.BoolVar(&f.portsOnly, "ports-only", false, "for a bare host, try only --ports, not the usual ones")
		fs.StringVar(&f.userlist, "userlist", "", "file of usernames weak-credentials also tries, one per line")
		fs.StringVar(&f.passlist, "passlist", "", "file of passwords weak-credentials also tries, one per line")
		fs.IntVar(&f.budget, "budget", 20, "weak-credentials: at most this many passwords per user")
		fs.Float64Var(&f.rate, "rate", 20, "weak-credentials: at most this many tries a second (1000 at most)")
		fs.DurationVar(&f.timeout, "timeout", 3*time.Second, "bound on each network step")
		fs.BoolVar(&f.noNmap, "no-nmap", false, "do not run nmap even if it is installed")
		fs.StringVar(&f.nmapPath, "nmap", "", "nmap to run (default: nmap in PATH)")
		fs.BoolVar(&f.quiet, "quiet", false, "no progress on standard error")
		return f
	},
	run: runAudit,
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// readLines reads a --userlist or --passlist file: one entry per line,
// "" for a comment or an empty line, so that entry i is line i+1 (the
// report names a password found by its line, never by its text).
func readLines(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l = strings.TrimRight(l, "\r"); strings.HasPrefix(l, "#") {
			l = ""
		}
		out = append(out, l)
	}
	return out, nil
}

func runAudit(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*auditFlags)
	if len(args) == 0 {
		return usagef("give at least one URL or host to audit")
	}
	if err := audit.Validate(args, audit.Options{Checks: splitList(f.checks), Skip: splitList(f.skip)}); err != nil {
		return usagef("%v", err)
	}
	if !(f.rate > 0 && f.rate <= audit.MaxCredentialRate) { // NaN and ±Inf too
		return usagef("--rate %v: give a number of tries a second above 0 and at most %d", f.rate, audit.MaxCredentialRate)
	}
	if !slices.Contains(audit.Formats, f.format) {
		return usagef("--format %q is not one of %s", f.format, strings.Join(audit.Formats, ", "))
	}
	var failOn audit.Severity = -1
	if f.failOn != "" {
		s, err := audit.ParseSeverity(f.failOn)
		if err != nil {
			return usagef("--fail-on: %v", err)
		}
		failOn = s
	}
	opts := audit.Options{
		Checks: splitList(f.checks), Skip: splitList(f.skip),
		Username: f.username, Password: f.password, CAFile: f.ca, Insecure: f.insecure, CertName: f.name,
		CredentialBudget: f.budget, CredentialRate: f.rate, Timeout: f.timeout,
		NoNmap: f.noNmap, Nmap: f.nmapPath, NoDefaultPorts: f.portsOnly,
	}
	if opts.Password == "" && f.username != "" {
		opts.Password = e.getenv("VIGIL_MQTT_PASSWORD")
	}
	for _, p := range splitList(f.ports) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return usagef("--ports: %q is not a port", p)
		}
		opts.Ports = append(opts.Ports, n)
	}
	var err error
	if opts.UserList, err = readLines(f.userlist); err != nil {
		return fmt.Errorf("--userlist: %w", err)
	}
	if opts.PassList, err = readLines(f.passlist); err != nil {
		return fmt.Errorf("--passlist: %w", err)
	}
	// Progress: the target and check under way, on standard error.
	var mu sync.Mutex
	state := "starting"
	start := time.Now()
	if !f.quiet {
		opts.Progress = func(target, check string, i, n int) {
			mu.Lock()
			state = fmt.Sprintf("%s: check %d/%d %s", target, i, n, check)
			mu.Unlock()
		}
		pctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			measure.Progress(pctx, e.err, 500*time.Millisecond, func() string {
				mu.Lock()
				defer mu.Unlock()
				return fmt.Sprintf("auditing %s (%.1fs)", state, time.Since(start).Seconds())
			})
		})
		defer func() { stop(); wg.Wait() }()
	}
	reports, err := audit.Run(ctx, args, opts)
	if err != nil && reports == nil {
		return err
	}
	out := e.out
	color := false
	if f.output != "" {
		file, err := os.Create(f.output)
		if err != nil {
			return err
		}
		defer file.Close()
		out = file
	} else if fd, ok := e.out.(*os.File); ok && f.format == "text" {
		color = term.IsTerminal(int(fd.Fd())) && e.getenv("NO_COLOR") == ""
	}
	if err := audit.Write(out, f.format, reports, audit.FormatOptions{Color: color, Version: version.Version}); err != nil {
		return err
	}
	if f.output != "" {
		fmt.Fprintf(e.err, "wrote %s (%s)\n", f.output, f.format)
	}
	if failOn >= 0 {
		n := 0
		for _, r := range reports {
			for _, fd := range r.Findings {
				if fd.Severity >= failOn {
					n++
				}
			}
		}
		// A gate cannot vouch for what it could not check either.
		var failed []string
		for _, r := range reports {
			for _, c := range r.Checks {
				if c.Status == audit.StatusError {
					failed = append(failed, r.Target+" "+c.ID)
				}
			}
		}
		var why []string
		if n > 0 {
			why = append(why, fmt.Sprintf("%d finding(s) at or above %s", n, failOn))
		}
		if len(failed) > 0 {
			why = append(why, fmt.Sprintf("%d check(s) could not run: %s", len(failed), strings.Join(failed, ", ")))
		}
		if len(why) > 0 {
			return fmt.Errorf("%s (--fail-on)", strings.Join(why, "; "))
		}
	}
	return err
}
