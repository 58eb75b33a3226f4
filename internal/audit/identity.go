package audit

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/rnd"
)

// The checks about who can connect and what they can read and write.

// CONNACK reason codes the checks tell apart.
const (
	rcSuccess       = 0x00
	rcNotAuthorized = 0x87
	rcBadUserOrPass = 0x86
	rcBanned        = 0x8A
)

// connackCode is the reason code a failed CONNECT got (-1: none, the
// connection failed before).
func connackCode(s *Session) int {
	if s != nil && s.Connack != nil {
		return int(s.Connack.ReasonCode)
	}
	return -1
}

// session connects as the identity the checks use, on the primary
// endpoint; it skips when nobody can connect.
func (env *Env) session(ctx context.Context, what string) (*Session, *Identity, error) {
	ep, ok := env.Primary()
	if !ok {
		return nil, nil, Skip("no endpoint speaks MQTT")
	}
	id := env.Identity()
	if id == nil {
		return nil, nil, Skip("no identity could connect (anonymous access is refused and no credentials were given or found)")
	}
	s, err := env.Connect(ctx, ep, env.ClientID(what), id)
	if connackCode(s) == rcBanned {
		return nil, nil, errBanned
	}
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s as %s: %w", ep.URL(), id, err)
	}
	return s, id, nil
}

// errBanned skips the checks that cannot connect any more because the
// broker banned the audit's address (after its failed logins: good).
var errBanned = Skip("the broker banned this address after the audit's failed logins (it limits guessing); " +
	"audit from an address it exempts, or after the block ends")

func checkAnonymous(ctx context.Context, env *Env) ([]Finding, error) {
	eps := env.MQTT()
	if len(eps) == 0 {
		return nil, Skip("no endpoint speaks MQTT")
	}
	var open, refused, failed []string
	for _, ep := range eps {
		s, err := env.Connect(ctx, ep, env.ClientID("anon"), nil)
		if err == nil {
			open = append(open, ep.URL())
			s.Close()
			continue
		}
		if code := connackCode(s); code >= 0 {
			refused = append(refused, fmt.Sprintf("%s: CONNACK 0x%02x", ep.URL(), code))
		} else {
			failed = append(failed, fmt.Sprintf("%s: %v", ep.URL(), err))
		}
	}
	if len(open) == 0 && len(refused) == 0 {
		// No CONNACK at all: nothing was refused, nothing is known.
		return nil, fmt.Errorf("no endpoint answered an anonymous CONNECT with a CONNACK (%s)", strings.Join(failed, "; "))
	}
	refused = append(refused, failed...)
	if len(open) == 0 {
		return nil, nil
	}
	env.SetAnonymousOK(true)
	if env.Identity() == nil {
		env.SetIdentity(&Identity{Source: "anonymous"})
	}
	evidence := "An anonymous CONNECT was accepted on " + strings.Join(open, ", ")
	if len(refused) > 0 {
		evidence += "\nRefused on " + strings.Join(refused, "; ")
	}
	if env.localMode() {
		return []Finding{{Severity: Info, Title: "Anonymous access is allowed on loopback only (Vigil's local mode)",
			Evidence: evidence + "\nThis is Vigil's local mode: every listener is on loopback, so only programs on this machine can connect.",
			Remediation: "To leave local mode: create users (vigil user add NAME --role device --generate), then bind a non-loopback address " +
				"(mqtt.listen: 0.0.0.0:1883), where anonymous clients are refused; mqtt.anonymous: never refuses them on loopback too."}}, nil
	}
	return []Finding{{Severity: Critical, Title: "Anyone who can reach the broker can connect without a username",
		Evidence: evidence,
		Remediation: "Mosquitto: allow_anonymous false with a password_file (the default since 2.0). EMQX 5: enable an authenticator " +
			"(authentication = [...]): clients without credentials are then refused. Vigil: bind non-loopback listeners (anonymous clients are refused there) or set mqtt.anonymous: never."}}, nil
}

// defaultCredentials are vendors' and tutorials' usual accounts.
var defaultCredentials = [][2]string{
	{"admin", "admin"}, {"admin", "password"}, {"admin", "public"}, {"admin", "123456"}, {"admin", "admin123"},
	{"guest", "guest"}, {"user", "user"}, {"test", "test"}, {"mqtt", "mqtt"}, {"root", "root"},
	{"pi", "raspberry"}, {"mosquitto", "mosquitto"}, {"homeassistant", "homeassistant"}, {"emqx", "public"},
	{"device", "device"}, {"iot", "iot"},
}

// guess is a password to try, and where it came from (what the evidence
// says instead of the password).
type guess struct{ pass, from string }

// candidates are the passwords to try per user: its defaults, then every
// password of the lists, each once.
func candidates(o *Options) (names []string, byUser map[string][]guess) {
	byUser = map[string][]guess{}
	add := func(u, p, from string) {
		if !slices.Contains(names, u) {
			names = append(names, u)
		}
		if !slices.ContainsFunc(byUser[u], func(g guess) bool { return g.pass == p }) {
			byUser[u] = append(byUser[u], guess{p, from})
		}
	}
	for _, c := range defaultCredentials {
		add(c[0], c[1], "a built-in vendor default")
	}
	for _, u := range o.UserList {
		if u = strings.TrimSpace(u); u != "" && !slices.Contains(names, u) {
			names = append(names, u)
		}
	}
	hasPass := slices.ContainsFunc(o.PassList, func(p string) bool { return p != "" })
	for _, u := range names {
		for i, p := range o.PassList {
			if p != "" {
				add(u, p, fmt.Sprintf("--passlist line %d", i+1))
			}
		}
		if !hasPass && byUser[u] == nil {
			add(u, u, "the guess for a --userlist user without --passlist") // at least its name as password
		}
	}
	return names, byUser
}

func checkWeakCredentials(ctx context.Context, env *Env) ([]Finding, error) {
	ep, ok := env.Primary()
	if !ok {
		return nil, Skip("no endpoint speaks MQTT")
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / env.Opts.CredentialRate))
	defer tick.Stop()
	try := func(user, pass string) (bool, int, error) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false, -1, ctx.Err()
		}
		s, err := env.Connect(ctx, ep, env.ClientID("cred"), &Identity{Username: user, Password: pass})
		if err == nil {
			s.Close()
			return true, rcSuccess, nil
		}
		code := connackCode(s)
		if code < 0 {
			return false, code, err
		}
		return false, code, nil
	}
	// A broker that takes any password: guessing means nothing.
	if ok, _, err := try("vigil-audit-"+rnd.Hex(4), rnd.Hex(12)); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", ep.URL(), err)
	} else if ok {
		if env.AnonymousOK() {
			return nil, Skip("the broker accepts any username and password (see anonymous-access)")
		}
		return []Finding{{Severity: Critical, Title: "The broker accepts any username and password",
			Evidence: "A made-up username with a random password was accepted on " + ep.URL(),
			Remediation: "Check passwords: Mosquitto password_file (or an auth plugin that fails closed), EMQX authenticator, " +
				"Vigil checks every password against its users (vigil user add)."}}, nil
	}
	names, byUser := candidates(env.Opts)
	var found []string
	tries, blocked := 0, ""
	for _, user := range names {
		for i, g := range byUser[user] {
			if i >= env.Opts.CredentialBudget {
				break
			}
			ok, code, err := try(user, g.pass)
			if err != nil {
				return nil, err
			}
			tries++
			if code == rcBanned {
				blocked = fmt.Sprintf("the broker banned this client (CONNACK 0x8A) after %d tries: it limits guessing", tries)
				break
			}
			if ok {
				// Neither the password nor a hint of it (its length,
				// a character): only where the guess came from.
				found = append(found, fmt.Sprintf("user %q: password found: %s", user, g.from))
				if id := env.Identity(); id == nil || id.Anonymous() {
					env.SetIdentity(&Identity{Username: user, Password: g.pass, Source: "weak-credentials"})
				}
				break // the first hit per user
			}
		}
		if blocked != "" {
			break
		}
	}
	if len(found) == 0 {
		if blocked != "" {
			return []Finding{{Severity: Info, Title: "Guessing was stopped by the broker", Evidence: blocked,
				Remediation: "Nothing to do: the broker blocks clients that fail to authenticate repeatedly."}}, nil
		}
		return nil, nil
	}
	ev := strings.Join(found, "\n") + fmt.Sprintf("\n%d tries at most %.0f a second, at most %d per user.", tries, env.Opts.CredentialRate, env.Opts.CredentialBudget)
	if blocked != "" {
		ev += "\n" + blocked
	}
	return []Finding{{Severity: Critical, Title: "Default or weak credentials work", Evidence: ev,
		Remediation: "Change these passwords to long random ones (Mosquitto: mosquitto_passwd; EMQX: its user database; Vigil: " +
			"vigil user passwd NAME --generate), and remove accounts nobody uses."}}, nil
}

// collect subscribes a session to filters and gathers what arrives until
// nothing new comes for quiet (three times quiet before the first), at
// most for max. It returns the SUBACK reason codes.
func collect(ctx context.Context, env *Env, s *Session, filters []string, quiet, max time.Duration) ([]byte, []*paho.Publish, error) {
	sub := &paho.Subscribe{}
	for _, f := range filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 0})
	}
	sctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
	sa, err := s.Subscribe(sctx, sub)
	cancel()
	if sa == nil {
		return nil, nil, err
	}
	var got []*paho.Publish
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	// Retained messages come at once after the SUBACK, but a busy broker
	// (or machine) may take longer for the first than between the
	// others: the first gets three times quiet.
	idle := time.NewTimer(min(max, 3*quiet))
	defer idle.Stop()
	for {
		select {
		case m := <-s.Messages:
			got = append(got, m)
			env.Seen(m.Topic, m.Payload, m.Retain)
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(quiet)
		case <-idle.C:
			return sa.Reasons, got, nil
		case <-deadline.C:
			return sa.Reasons, got, nil
		case <-ctx.Done():
			return sa.Reasons, got, ctx.Err()
		case <-s.Disconnected:
			return sa.Reasons, got, nil
		}
	}
}

func granted(codes []byte, i int) bool { return i < len(codes) && codes[i] < 0x80 }

func checkFingerprint(ctx context.Context, env *Env) ([]Finding, error) {
	s, id, err := env.session(ctx, "sys")
	if err != nil {
		return nil, err
	}
	defer s.Close()
	codes, _, err := collect(ctx, env, s, []string{"$SYS/#"}, 300*time.Millisecond, 1500*time.Millisecond)
	if err != nil && codes == nil {
		return nil, err
	}
	env.mu.Lock()
	env.sysRead = granted(codes, 0)
	env.sysBy = id
	env.mu.Unlock()
	sys := env.Sys()
	var ev []string
	product := ""
	for _, k := range []string{"$SYS/broker/version", "$SYS/broker/versions", "$SYS/broker/sysdescr"} {
		if v := sys[k]; v != "" {
			ev = append(ev, k+": "+v)
			if product == "" {
				product = v
			}
		}
	}
	if p := s.Connack.Properties; p != nil {
		var caps []string
		if p.MaximumPacketSize != nil {
			caps = append(caps, fmt.Sprintf("maximum packet size %d", *p.MaximumPacketSize))
		}
		if p.ReceiveMaximum != nil {
			caps = append(caps, fmt.Sprintf("receive maximum %d", *p.ReceiveMaximum))
		}
		if p.TopicAliasMaximum != nil {
			caps = append(caps, fmt.Sprintf("topic alias maximum %d", *p.TopicAliasMaximum))
		}
		if p.MaximumQoS != nil {
			caps = append(caps, fmt.Sprintf("maximum QoS %d", *p.MaximumQoS))
		}
		if p.ServerKeepAlive != nil {
			caps = append(caps, fmt.Sprintf("server keep alive %d", *p.ServerKeepAlive))
		}
		if len(caps) > 0 {
			ev = append(ev, "CONNACK: "+strings.Join(caps, ", "))
		}
	}
	switch {
	case product != "":
		product = normaliseProduct(product, sys)
	case len(sys) > 0:
		product = "unknown (it publishes $SYS topics, but no version)"
	default:
		product = "unknown ($SYS is not readable by " + id.String() + ")"
	}
	env.SetBroker(product)
	f := Finding{Severity: Info, Title: "The broker is " + product, Evidence: strings.Join(ev, "\n"),
		Remediation: "Keep the broker up to date; hide its version from clients that need not know it (see sys-topics-exposed)."}
	if major, ok := mosquittoMajor(product); ok && major < 2 {
		f.Severity, f.Title = Medium, "An old Mosquitto ("+product+") without 2.0's secure defaults"
		f.Remediation = "Upgrade to Mosquitto 2.x (anonymous access off by default, listeners explicit) and keep it updated."
	}
	return []Finding{f}, nil
}

// normaliseProduct turns $SYS/broker/version values into "product
// version"; a bare version is mochi-mqtt's (Vigil's broker) when the
// other $SYS topics are mochi's.
func normaliseProduct(v string, sys map[string]string) string {
	v = strings.TrimSpace(v)
	switch {
	case strings.HasPrefix(strings.ToLower(v), "mosquitto version "):
		return "Mosquitto " + strings.TrimSpace(v[len("mosquitto version "):])
	case bareVersion.MatchString(v):
		if _, ok := sys["$SYS/broker/system/threads"]; ok {
			return "mochi-mqtt " + strings.TrimPrefix(v, "v") + " (the broker of Vigil and other Go servers)"
		}
		return "unknown broker, version " + v
	}
	return v
}

var bareVersion = regexp.MustCompile(`^v?\d+(\.\d+)+$`)

func mosquittoMajor(product string) (int, bool) {
	var major int
	if _, err := fmt.Sscanf(product, "Mosquitto %d.", &major); err != nil {
		return 0, false
	}
	return major, true
}

func checkSysExposed(ctx context.Context, env *Env) ([]Finding, error) {
	env.mu.Lock()
	read, by, checked := env.sysRead, env.sysBy, env.sysBy != nil
	env.mu.Unlock()
	if !checked {
		return nil, Skip("broker-fingerprint did not run or could not connect")
	}
	sys := env.Sys()
	if !read || len(sys) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(sys))
	for k := range sys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var ev []string
	for _, k := range keys[:min(len(keys), 8)] {
		ev = append(ev, k+": "+truncate(sys[k], 60))
	}
	if len(keys) > 8 {
		ev = append(ev, fmt.Sprintf("... %d topics in all", len(keys)))
	}
	sev, who := env.severityFor(by, Medium, Low), by.String()
	return []Finding{{Severity: sev, Title: "$SYS topics can be read by " + who,
		Evidence:    strings.Join(ev, "\n"),
		Remediation: "Restrict $SYS to administrators: Mosquitto ACL (no 'topic read $SYS/#' for others), EMQX ACL deny $SYS/#, Vigil: only admin and viewer roles may subscribe to $SYS/#."}}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func checkWildcard(ctx context.Context, env *Env) ([]Finding, error) {
	s, id, err := env.session(ctx, "wild")
	if err != nil {
		return nil, err
	}
	defer s.Close()
	codes, got, err := collect(ctx, env, s, []string{"#"}, 300*time.Millisecond, 1500*time.Millisecond)
	if err != nil && codes == nil {
		return nil, err
	}
	if !granted(codes, 0) {
		return nil, nil
	}
	// A granted SUBACK is not enough: some brokers (Mosquitto) grant # and
	// filter what they deliver by ACL. It counts when # delivers messages
	// of other clients, or a probe this identity publishes elsewhere.
	others := map[string]bool{}
	for _, m := range got {
		if !ownTopic(m.Topic, id) {
			others[m.Topic] = true
		}
	}
	probe := "vigil-audit/wildcard/" + rnd.Hex(6)
	if len(others) == 0 {
		if pub, _, err := env.session(ctx, "wildp"); err == nil {
			pctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
			pub.Publish(pctx, &paho.Publish{Topic: probe, QoS: 1, Payload: []byte("vigil audit: # probe")})
			cancel()
			pub.Close()
			for _, m := range s.Collect(ctx, 500*time.Millisecond, 10) {
				if m.Topic == probe {
					others[m.Topic] = true
				}
			}
		}
	}
	if len(others) == 0 {
		return nil, nil
	}
	ev := fmt.Sprintf("SUBACK granted # (QoS %d) to %s; it delivered messages of %d topics that are not its own, e.g. %s",
		codes[0], id, len(others), firstKey(others))
	if others[probe] && len(others) == 1 {
		ev = fmt.Sprintf("SUBACK granted # (QoS %d) to %s, and a probe it published on %s reached that subscription: "+
			"# delivers every topic (no other client's messages passed by during the check)", codes[0], id, probe)
	}
	sev := env.severityFor(id, High, Low)
	return []Finding{{Severity: sev, Title: "Subscribing to # is allowed to " + id.String(), Evidence: ev,
		Remediation: "Give each client an ACL limited to its own topics: Mosquitto acl_file with pattern lines (%u, %c), " +
			"EMQX ACL, Vigil per-user publish/subscribe patterns (vigil user add --pub/--sub)."}}, nil
}

// ownTopic tells whether a topic belongs to the identity (a level is its
// username) or to the audit itself.
func ownTopic(topic string, id *Identity) bool {
	if strings.HasPrefix(topic, "vigil-audit/") && !strings.HasPrefix(topic, "vigil-audit/wildcard/") {
		return true
	}
	return id != nil && !id.Anonymous() && slices.Contains(strings.Split(topic, "/"), id.Username)
}

func firstKey(m map[string]bool) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[0]
}

func checkRetainedLeak(ctx context.Context, env *Env) ([]Finding, error) {
	retained := env.Retained()
	if len(retained) == 0 {
		if id := env.Identity(); id == nil {
			return nil, Skip("no identity could connect")
		}
		if env.checkStatus("wildcard-subscribe") == StatusPassed && len(env.Topics()) == 0 {
			return nil, Skip("%s read no other client's messages through #, so no retained message was seen", env.Identity())
		}
		return nil, nil
	}
	hits := scanRetained(retained)
	if len(hits) == 0 {
		return nil, nil
	}
	worst := Info
	var ev []string
	for _, h := range hits {
		worst = max(worst, h.sev)
		if len(ev) < 20 {
			ev = append(ev, fmt.Sprintf("%s: %s (%s)", h.topic, h.kind, h.redacted))
		}
	}
	if len(hits) > 20 {
		ev = append(ev, fmt.Sprintf("... %d matches in all", len(hits)))
	}
	return []Finding{{Severity: worst, Title: fmt.Sprintf("%d retained messages hold sensitive data", countTopics(hits)),
		Evidence: strings.Join(ev, "\n"),
		Remediation: "Never publish secrets or personal data retained; clear a retained message by publishing an empty retained " +
			"message to its topic; restrict who may read those topics with ACLs."}}, nil
}

type leak struct {
	topic, kind, redacted string
	sev                   Severity
}

func countTopics(h []leak) int {
	seen := map[string]bool{}
	for _, l := range h {
		seen[l.topic] = true
	}
	return len(seen)
}

// probePublish publishes a QoS 1 probe and reports whether the broker
// took it (a PUBACK below 0x80), with the reason code. A broker that
// drops the message without a PUBACK, or the connection, refused it.
func probePublish(ctx context.Context, env *Env, s *Session, topic string, payload []byte) (bool, byte, error) {
	pctx, cancel := context.WithTimeout(ctx, min(env.Opts.Timeout, time.Second))
	defer cancel()
	pr, err := s.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if pr != nil {
		return pr.ReasonCode < 0x80, pr.ReasonCode, nil
	}
	select {
	case <-s.Disconnected:
		return false, 0, nil
	default:
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return false, 0, nil
	}
	return false, 0, err
}

func checkSysPublish(ctx context.Context, env *Env) ([]Finding, error) {
	sub, id, err := env.session(ctx, "sysw")
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	pub, _, err := env.session(ctx, "sysp")
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	topic := "$SYS/vigil-audit/" + rnd.Hex(4)
	codes, _, _ := collect(ctx, env, sub, []string{topic}, 10*time.Millisecond, 20*time.Millisecond)
	took, code, err := probePublish(ctx, env, pub, topic, []byte("vigil audit: $SYS publish probe"))
	if err != nil {
		return nil, err
	}
	delivered := false
	if granted(codes, 0) && took {
		for _, m := range sub.Collect(ctx, 500*time.Millisecond, 1) {
			delivered = delivered || m.Topic == topic
		}
	}
	if !delivered {
		return nil, nil
	}
	return []Finding{{Severity: High, Title: "Clients can publish to $SYS topics",
		Evidence: fmt.Sprintf("%s published to %s (PUBACK 0x%02x, accepted %v) and a subscriber received it", id, topic, code, took),
		Remediation: "$SYS is the broker's own: Mosquitto refuses client publishes there unless an ACL allows them (remove it); " +
			"EMQX ACL deny publish $SYS/#; Vigil refuses them always."}}, nil
}

func checkACLPublish(ctx context.Context, env *Env) ([]Finding, error) {
	var targets []string
	id := env.Identity()
	for _, t := range env.Topics() {
		if strings.HasPrefix(t, "vigil-audit") || strings.HasPrefix(t, "$") {
			continue
		}
		if ownTopic(t, id) {
			continue // the identity's own topic
		}
		targets = append(targets, t)
		if len(targets) == 5 {
			break
		}
	}
	if len(targets) == 0 {
		return nil, Skip("no other client's topic was seen to try")
	}
	s, id, err := env.session(ctx, "acl")
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var took []string
	for _, t := range targets {
		ok, code, err := probePublish(ctx, env, s, t, []byte(`{"vigil_audit":"ACL probe, please ignore"}`))
		if err != nil {
			return nil, err
		}
		if ok {
			took = append(took, fmt.Sprintf("%s (PUBACK 0x%02x)", t, code))
		}
		select {
		case <-s.Disconnected:
			if s, _, err = env.session(ctx, "acl"); err != nil {
				return nil, err
			}
			defer s.Close()
		default:
		}
	}
	if len(took) == 0 {
		return nil, nil
	}
	sev := env.severityFor(id, High, Medium)
	return []Finding{{Severity: sev, Title: fmt.Sprintf("%s can publish to %d topics of other clients", id, len(took)),
		Evidence: "Accepted: " + strings.Join(took, ", ") + "\n(one non-retained probe message each, marked as the audit's)",
		Remediation: "Limit each client to its own topics: Mosquitto acl_file 'pattern write devices/%u/#', EMQX ACL, " +
			"Vigil per-user publish patterns (the device role's default is vigil/+/%u/#)."}}, nil
}
