package audit

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/Ullaakut/nmap/v3"
)

// The nmap check: nmap's mqtt-subscribe script, run on the plain MQTT
// ports, its view merged into the other checks' evidence.

const (
	// nmapListen is the script's listen-time. The script only looks at
	// the clock when a message comes (its socket waits up to ~7 s for
	// one), so it is also told to stop after listen-msgs messages: what
	// a subscription of ours got at once. When that is none, the script
	// is cut at nmapQuiet (--script-timeout), losing its output but not
	// 7 s; nmapSafety bounds it otherwise.
	nmapListen = time.Second
	nmapQuiet  = 2 * time.Second
	nmapSafety = 8 * time.Second
	// nmapHostTimeout bounds nmap's work on the host (--host-timeout);
	// the process gets nmapGrace more before it is killed.
	nmapHostTimeout = 15 * time.Second
	nmapGrace       = 5 * time.Second
	// nmapShown is how many topic names the evidence lists.
	nmapShown = 20
)

// nmapView is what mqtt-subscribe reported for one port.
type nmapView struct {
	ep      Endpoint
	ran     bool // the script gave a result
	state   string
	service string
	err     string            // the script's ERROR
	topics  map[string]string // topic -> most recent payload
}

func checkNmap(ctx context.Context, env *Env) ([]Finding, error) {
	if env.Opts.NoNmap {
		env.SetNmap("skipped (--no-nmap)")
		return nil, Skip("--no-nmap")
	}
	bin := env.Opts.Nmap
	if bin == "" {
		bin = "nmap"
	}
	bin, err := exec.LookPath(bin)
	if err != nil {
		env.SetNmap("not installed")
		return nil, Skip("nmap is not installed")
	}
	var eps []Endpoint
	offersTLS := false
	for _, ep := range scanned(ctx, env) {
		if ep.Scheme == "mqtt" {
			eps = append(eps, ep)
		}
		offersTLS = offersTLS || ep.TLS()
	}
	if len(eps) == 0 {
		env.SetNmap("not used: no plain MQTT port answers")
		return nil, Skip("mqtt-subscribe needs a plain MQTT port, and none answers")
	}
	id := env.Identity()
	var note string
	if id != nil && id.Password != "" && offersTLS {
		// The script speaks plain MQTT only; the identity's password
		// goes only over TLS when the broker offers it.
		note = fmt.Sprintf("mqtt-subscribe ran anonymously: the broker offers MQTT over TLS, and mqtt-subscribe speaks only plain MQTT, "+
			"which would carry user %q's password in clear", id.Username)
		id = nil
	}
	msgs := nmapExpected(ctx, env, eps[0], id)

	limit := nmapSafety
	if msgs <= 0 {
		limit = nmapQuiet
	}
	run, err := runNmap(ctx, env, bin, eps, id, max(1, msgs), limit)
	if err != nil {
		env.SetNmap("failed: " + err.Error())
		return nil, fmt.Errorf("nmap: %w", err)
	}
	env.SetNmap(fmt.Sprintf("used (nmap %s)", run.Version))
	views := nmapViews(run, eps)
	f := nmapMerge(env, run.Version, id, views, limit)
	if note != "" {
		f.Evidence += "\n" + note
	}
	return []Finding{f}, nil
}

// nmapExpected counts the messages a subscription to $SYS/# and # gets at
// once (retained ones), for the script's listen-msgs; -1 if it could not
// connect (nor will the script: it ends at once). It connects as the
// script will, id (nil: anonymous) on the plain port ep.
func nmapExpected(ctx context.Context, env *Env, ep Endpoint, id *Identity) int {
	s, err := env.Connect(ctx, ep, env.ClientID("nmap"), id)
	if err != nil {
		return -1
	}
	defer s.Close()
	_, got, _ := collect(ctx, env, s, []string{"$SYS/#", "#"}, 200*time.Millisecond, time.Second)
	return len(got)
}

func runNmap(ctx context.Context, env *Env, bin string, eps []Endpoint, id *Identity, msgs int, limit time.Duration) (*nmap.Run, error) {
	// Script arguments go in a private file: the password must not show
	// in the process list.
	args := map[string]string{
		"mqtt-subscribe.listen-time": fmt.Sprintf("%dms", nmapListen.Milliseconds()),
		"mqtt-subscribe.listen-msgs": strconv.Itoa(msgs),
		"mqtt-subscribe.client-id":   env.ClientID("nmap"),
	}
	if id != nil && !id.Anonymous() {
		args["mqtt-subscribe.username"] = id.Username
		args["mqtt-subscribe.password"] = id.Password
	}
	f, err := os.CreateTemp("", "vigil-audit-nmap-*.args")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(f, "%s=%s\n", k, nseQuote(args[k]))
	}
	if err := f.Close(); err != nil {
		return nil, err
	}

	var ports []string
	for _, ep := range eps {
		ports = append(ports, strconv.Itoa(ep.Port))
	}
	opts := []nmap.Option{
		nmap.WithBinaryPath(bin),
		nmap.WithTargets(env.Target.Host),
		nmap.WithPorts(ports...),
		nmap.WithSkipHostDiscovery(),
		nmap.WithConnectScan(),
		nmap.WithDisabledDNSResolution(),
		// "+" runs the script whatever the port's number or service.
		nmap.WithScripts("+mqtt-subscribe"),
		nmap.WithScriptArgumentsFile(f.Name()),
		nmap.WithScriptTimeout(limit),
		nmap.WithHostTimeout(nmapHostTimeout),
	}
	if ip := net.ParseIP(env.Target.Host); ip != nil && ip.To4() == nil {
		opts = append(opts, nmap.WithIPv6Scanning())
	}
	ctx, cancel := context.WithTimeout(ctx, nmapHostTimeout+nmapGrace)
	defer cancel()
	sc, err := nmap.NewScanner(ctx, opts...)
	if err != nil {
		return nil, err
	}
	run, warnings, err := sc.Run()
	if err != nil {
		if warnings != nil && len(*warnings) > 0 && !errors.Is(err, nmap.ErrScanTimeout) {
			return nil, fmt.Errorf("%w (%s)", err, strings.Join(*warnings, "; "))
		}
		return nil, err
	}
	return run, nil
}

// nseQuote quotes a script argument's value for nmap's parser.
func nseQuote(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// nmapViews reads the script's results per endpoint.
func nmapViews(run *nmap.Run, eps []Endpoint) []nmapView {
	var out []nmapView
	for _, ep := range eps {
		v := nmapView{ep: ep, state: "not reported", topics: map[string]string{}}
		for _, h := range run.Hosts {
			for _, p := range h.Ports {
				if int(p.ID) != ep.Port || p.Protocol != "tcp" {
					continue
				}
				v.state, v.service = p.State.State, p.Service.Name
				for _, s := range p.Scripts {
					if s.ID != "mqtt-subscribe" {
						continue
					}
					v.ran = true
					for _, e := range s.Elements {
						if e.Key == "ERROR" {
							v.err = html.UnescapeString(e.Value)
						}
					}
					for _, t := range s.Tables {
						for _, e := range t.Elements {
							v.topics[html.UnescapeString(e.Key)] = html.UnescapeString(e.Value)
						}
					}
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// nmapMerge adds nmap's view to the other checks' findings and returns
// its own summary.
func nmapMerge(env *Env, version string, id *Identity, views []nmapView, limit time.Duration) Finding {
	who := "an anonymous client"
	if id != nil {
		who = id.String()
	}
	var ev []string
	var brokerVersion string
	total := 0
	for _, v := range views {
		port := fmt.Sprintf("%d/tcp %s", v.ep.Port, v.state)
		if v.service != "" {
			port += " (service: " + v.service + ")"
		}
		env.AddEvidence("open-ports", fmt.Sprintf("nmap %s (connect scan): %s", version, port))

		var sys, other []string
		for t := range v.topics {
			if strings.HasPrefix(t, "$SYS/") {
				sys = append(sys, t)
			} else {
				other = append(other, t)
			}
		}
		sort.Strings(sys)
		sort.Strings(other)
		total += len(v.topics)
		line := fmt.Sprintf("%s: %s; mqtt-subscribe as %s", v.ep.URL(), port, who)
		switch {
		case !v.ran && v.state == "open":
			line += fmt.Sprintf(": no result within %s (the script waits for messages; none came)", limit)
		case !v.ran:
			line += ": did not run"
		case v.err != "":
			line += ": " + v.err
		case len(v.topics) == 0:
			line += ": subscribed, no message came"
		default:
			line += fmt.Sprintf(": %d $SYS topics, %d other topics", len(sys), len(other))
		}
		ev = append(ev, line)
		if ver := v.topics["$SYS/broker/version"]; ver != "" {
			brokerVersion = ver
			ev = append(ev, "$SYS/broker/version: "+ver)
			env.AddEvidence("broker-fingerprint", "nmap mqtt-subscribe saw $SYS/broker/version: "+ver)
		}
		if len(sys) > 0 {
			ev = append(ev, "$SYS topics: "+nmapList(sys))
			env.AddEvidence("sys-topics-exposed", fmt.Sprintf("nmap mqtt-subscribe read %d $SYS topics: %s", len(sys), nmapList(sys)))
		}
		if len(other) > 0 {
			ev = append(ev, "other topics: "+nmapList(other))
			env.AddEvidence("wildcard-subscribe", fmt.Sprintf("nmap mqtt-subscribe's # subscription received %d topics: %s", len(other), nmapList(other)))
		}
	}
	title := fmt.Sprintf("nmap's mqtt-subscribe read %s", countNoun(total, "topic"))
	switch {
	case brokerVersion != "":
		title += ", broker version " + brokerVersion
	case total == 0 && len(views) == 1 && views[0].err != "":
		title = "nmap's mqtt-subscribe: " + views[0].err
	case total == 0 && len(views) == 1 && !views[0].ran:
		title = fmt.Sprintf("nmap's mqtt-subscribe got no message within %s", limit)
	}
	return Finding{
		Severity: Info,
		Title:    title,
		Evidence: fmt.Sprintf("nmap %s\n%s", version, strings.Join(ev, "\n")),
		Remediation: "This is what anyone who reaches the port sees with nmap. Require authentication " +
			"(Mosquitto: `allow_anonymous false` with a `password_file`; EMQX: an authenticator; Vigil: `mqtt.anonymous: never` and users) " +
			"and keep $SYS/# and # from devices with ACLs (Mosquitto: `acl_file`; EMQX: authorization rules; Vigil: each user's ACL).",
	}
}

// nmapList joins names, the first few of them.
func nmapList(names []string) string {
	if len(names) <= nmapShown {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:nmapShown], ", ") + fmt.Sprintf(" and %d more", len(names)-nmapShown)
}
