package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/rnd"
)

// The protocol checks: who can take over a client id, and whether the
// broker accepts what the MQTT specification forbids. They speak MQTT 5
// through rawConn (raw.go), since paho will not encode a forbidden packet.

// remedyUpgrade is the remediation of the checks that find a broker
// accepting malformed packets.
const remedyUpgrade = "A broker must close the connection of a client that sends a malformed packet. " +
	"Mosquitto 2 and EMQX 5 do; upgrade an older Mosquitto or EMQX. " +
	"Vigil: its broker (mochi-mqtt) should refuse these; upgrade Vigil, and meanwhile allow devices only the topics they need (per-user ACLs), which also bounds what a malformed filter can reach."

// prober sends raw probes to the primary endpoint as the identity the
// checks use, reconnecting after the broker ends a connection.
type prober struct {
	env  *Env
	ep   Endpoint
	id   *Identity
	what string   // client id label
	c    *rawConn // nil after the broker ended it
}

// newProber finds the endpoint and identity the protocol checks use. With
// no identity known and no anonymous-access verdict (that check was not
// selected, or failed), it tries an anonymous CONNECT itself and, when the
// broker accepts it, records the anonymous identity for the later checks.
func (env *Env) newProber(ctx context.Context, what string) (*prober, error) {
	ep, ok := env.Primary()
	if !ok {
		return nil, Skip("no endpoint speaks MQTT")
	}
	id := env.Identity()
	if id == nil {
		if env.checkStatus("anonymous-access") == StatusPassed {
			return nil, Skip("no identity could connect (anonymous access is refused and no credentials were given or found)")
		}
		c, err := env.rawConnect(ctx, ep, env.ClientID("anon"), nil)
		var refused *connectRefused
		switch {
		case errors.As(err, &refused):
			return nil, Skip("no identity could connect (an anonymous CONNECT got %s and no credentials were given or found)", reasonName(refused.Code))
		case err != nil:
			return nil, fmt.Errorf("connect to %s anonymously: %w", ep.URL(), err)
		}
		c.Close()
		env.SetAnonymousOK(true)
		env.SetIdentity(&Identity{Source: "anonymous"})
		if id = env.Identity(); id == nil {
			return nil, Skip("no identity could connect")
		}
	}
	return &prober{env: env, ep: ep, id: id, what: what}, nil
}

// checkStatus returns how an earlier check of this target went ("" if it
// did not run).
func (env *Env) checkStatus(id string) string {
	env.mu.Lock()
	defer env.mu.Unlock()
	for _, c := range env.report.Checks {
		if c.ID == id {
			return c.Status
		}
	}
	return ""
}

func (p *prober) close() {
	if p.c != nil {
		p.c.Close()
		p.c = nil
	}
}

// send probes with pk on the current connection (connecting first if
// needed); after the broker ended it or fell silent, the next probe
// connects again.
func (p *prober) send(ctx context.Context, pk *packets.Packet) (outcome, error) {
	if p.c == nil {
		c, err := p.env.rawConnect(ctx, p.ep, p.env.ClientID(p.what), p.id)
		var refused *connectRefused
		if errors.As(err, &refused) && refused.Code == rcBanned {
			return outcome{}, errBanned
		}
		if err != nil {
			return outcome{}, fmt.Errorf("connect to %s as %s: %w", p.ep.URL(), p.id, err)
		}
		p.c = c
	}
	if (pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0) || pk.FixedHeader.Type == packets.Subscribe {
		pk.PacketID = p.c.id()
	}
	o, err := p.c.probe(pk)
	if err != nil || o.Ended || o.NoAnswer {
		p.close()
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // the connection was closed by the cancellation, not the broker
	}
	return o, err
}

// publish sends a PUBLISH with the given QoS bits (3 included).
func (p *prober) publish(ctx context.Context, topic string, qos byte, payload []byte) (outcome, error) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, Payload: payload}
	return p.send(ctx, &pk)
}

// subscribe sends a SUBSCRIBE of one filter requesting qos (3 included).
func (p *prober) subscribe(ctx context.Context, filter string, qos byte) (outcome, error) {
	// The fixed header of a SUBSCRIBE has the flags 0010: mochi encodes
	// them from Qos.
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}}
	return p.send(ctx, &pk)
}

// bases are the topic prefixes the probes try, in order: a fresh one
// under vigil-audit/, and for a user one in Vigil's device namespace,
// since a Vigil device may only use vigil/<site>/<its name>/# (none of
// Vigil's components reads vigil/vigil-audit/<name>/<nonce>/...).
func (p *prober) bases() []string { return p.env.probeBases(p.id, rnd.Hex(4)) }

// writable returns a topic prefix the identity may publish to (a QoS 1
// PUBLISH there got a successful PUBACK), or "" and what the broker said
// to each try.
func (p *prober) writable(ctx context.Context) (string, string, error) {
	var tried []string
	for _, b := range p.bases() {
		o, err := p.publish(ctx, b+"/probe", 1, []byte("vigil audit probe"))
		if err != nil {
			return "", "", err
		}
		if o.Ack != 0 && o.Code < 0x80 {
			return b, "", nil
		}
		tried = append(tried, fmt.Sprintf("PUBLISH %q: %s", b+"/probe", o))
	}
	return "", strings.Join(tried, "; "), nil
}

// subscribable returns a topic prefix under which the identity may
// subscribe (prefix/# was granted), or "" and what the broker said.
func (p *prober) subscribable(ctx context.Context) (string, string, error) {
	var tried []string
	for _, b := range p.bases() {
		o, err := p.subscribe(ctx, b+"/#", 0)
		if err != nil {
			return "", "", err
		}
		if o.Ack != 0 && o.Code < 0x80 {
			return b, "", nil
		}
		tried = append(tried, fmt.Sprintf("SUBSCRIBE %q: %s", b+"/#", o))
	}
	return "", strings.Join(tried, "; "), nil
}

// verdicts collects the probes of a check and what the broker did.
type verdicts struct {
	lines    []string
	accepted int
	decided  int // accepted or refused (not silent for lack of an answer)
}

func (v *verdicts) add(what string, o outcome) {
	line := what + ": " + o.String()
	switch {
	case o.accepted():
		line += " (accepted)"
		v.accepted++
		v.decided++
	case o.refused():
		line += " (refused)"
		v.decided++
	}
	v.lines = append(v.lines, line)
}

func (v *verdicts) String() string { return strings.Join(v.lines, "\n") }

func checkClientIDTakeover(ctx context.Context, env *Env) ([]Finding, error) {
	p, err := env.newProber(ctx, "takeover")
	if err != nil {
		return nil, err
	}
	cid := env.ClientID("victim")
	a, err := env.rawConnect(ctx, p.ep, cid, p.id)
	if err != nil {
		return nil, fmt.Errorf("connect the first session to %s as %s: %w", p.ep.URL(), p.id, err)
	}
	defer a.Close()
	b, err := env.rawConnect(ctx, p.ep, cid, p.id)
	var refused *connectRefused
	if errors.As(err, &refused) {
		return nil, nil // the broker refuses a second connection with a client id in use
	}
	if err != nil {
		return nil, fmt.Errorf("connect the second session: %w", err)
	}
	defer b.Close()
	o, err := a.probe(nil)
	if err != nil {
		return nil, fmt.Errorf("first session: %w", err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	switch {
	case o.NoAnswer:
		return nil, fmt.Errorf("the first session did not answer a PINGREQ within %s", env.Opts.Timeout)
	case !o.Ended:
		return nil, nil // both sessions live: the broker did not take the id over
	}
	how := "closed its connection"
	if o.Sent {
		how = "sent it DISCONNECT " + reasonName(o.Disconnect)
	}
	evidence := fmt.Sprintf("Session A connected to %s as %s with client id %q; when session B connected with the same client id, the broker %s.\n"+
		"MQTT requires the takeover itself; what matters is who can do it.", p.ep.URL(), p.id, cid, how)
	remedy := "Bind client ids to users: Mosquitto use_username_as_clientid true, or ACL patterns with %c so that a client id works only for its own topics; " +
		"EMQX an authorization rule on ${clientid} (or mqtt.use_username_as_clientid); Vigil ACL patterns with %c (e.g. clients/%c/#) for device users."
	if p.id.Anonymous() {
		sev := Medium
		if env.localMode() {
			evidence += "\nVigil's local mode: only programs on this machine can connect anonymously."
			sev = Info // as anonymous-access: local mode is explained there
		}
		return []Finding{{Severity: sev, Title: "Anyone can disconnect any client whose client id they know",
			Evidence: evidence + "\nDevices' client ids are often their MAC addresses or serial numbers, easy to guess or read from $SYS and logs.",
			Remediation: "Require authentication (Mosquitto allow_anonymous false, EMQX 5 an authenticator, Vigil non-loopback listeners or mqtt.anonymous: never); then " +
				strings.ToLower(remedy[:1]) + remedy[1:]}}, nil
	}
	// The same user taking over its own client id is MQTT's rule; what
	// helps is one account per device.
	return []Finding{{Severity: Info, Title: fmt.Sprintf("Clients of user %q can take over each other's sessions by client id", p.id.Username),
		Evidence:    evidence + "\nAny client of this user can disconnect another of its clients whose id it knows.",
		Remediation: "Give each device its own account, so that one device cannot take over another's session. " + remedy}}, nil
}

func checkInvalidTopic(ctx context.Context, env *Env) ([]Finding, error) {
	p, pub, sub, err := env.probeTopics(ctx, "topic")
	if err != nil {
		return nil, err
	}
	defer p.close()
	var v verdicts
	if pub != "" {
		// '+' and '#' are forbidden in topic names [MQTT-3.3.2-2].
		for _, topic := range []string{pub + "/+/x", pub + "/x#"} {
			o, err := p.publish(ctx, topic, 1, []byte("vigil audit probe"))
			if err != nil {
				return nil, err
			}
			v.add(fmt.Sprintf("PUBLISH QoS 1 to topic name %q", topic), o)
		}
	}
	if sub != "" {
		// '#' only as the last level, '+' and '#' only as a whole level
		// [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.1-3].
		for _, filter := range []string{sub + "/#/x", sub + "/x+/y", sub + "/x#"} {
			o, err := p.subscribe(ctx, filter, 0)
			if err != nil {
				return nil, err
			}
			v.add(fmt.Sprintf("SUBSCRIBE to filter %q", filter), o)
		}
	}
	if v.accepted == 0 {
		return nil, nil
	}
	return []Finding{{Severity: Medium, Title: "The broker accepts topic names with wildcards or malformed topic filters",
		Evidence: fmt.Sprintf("As %s on %s:\n%s", p.id, p.ep.URL(), &v), Remediation: remedyUpgrade}}, nil
}

func checkInvalidUTF8(ctx context.Context, env *Env) ([]Finding, error) {
	p, err := env.newProber(ctx, "utf8")
	if err != nil {
		return nil, err
	}
	defer p.close()
	pub, why, err := p.writable(ctx)
	if err != nil {
		return nil, err
	}
	if pub == "" {
		return nil, Skip("%s may not publish under the audit's topics (%s)", p.id, why)
	}
	var v verdicts
	// Topic names are UTF-8 without U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2].
	for _, topic := range []string{pub + "/\xc3\x28", pub + "/a\x00b"} {
		o, err := p.publish(ctx, topic, 1, []byte("vigil audit probe"))
		if err != nil {
			return nil, err
		}
		v.add(fmt.Sprintf("PUBLISH QoS 1 to topic name %q", topic), o)
	}
	if v.accepted == 0 {
		return nil, nil
	}
	return []Finding{{Severity: Medium, Title: "The broker accepts topic names that are not valid UTF-8",
		Evidence:    fmt.Sprintf("As %s on %s:\n%s\nSubscribers, bridges and databases downstream may fail on such names, or match them where they should not.", p.id, p.ep.URL(), &v),
		Remediation: remedyUpgrade}}, nil
}

func checkInvalidQoS(ctx context.Context, env *Env) ([]Finding, error) {
	p, pub, sub, err := env.probeTopics(ctx, "qos")
	if err != nil {
		return nil, err
	}
	defer p.close()
	var out []Finding
	if pub != "" {
		// Both QoS bits set is a malformed PUBLISH [MQTT-3.3.1-4].
		o, err := p.publish(ctx, pub+"/qos3", 3, []byte("vigil audit probe"))
		if err != nil {
			return nil, err
		}
		if o.accepted() {
			out = append(out, Finding{Severity: Medium, Title: "The broker accepts a PUBLISH with QoS 3",
				Evidence: fmt.Sprintf("As %s on %s: PUBLISH with both QoS bits set to %q: %s; the specification requires the broker to close the connection.",
					p.id, p.ep.URL(), pub+"/qos3", o),
				Remediation: remedyUpgrade})
		}
	}
	if sub != "" {
		// QoS 3 in a subscription's options is malformed [MQTT-3.8.3-4].
		o, err := p.subscribe(ctx, sub+"/qos3", 3)
		if err != nil {
			return nil, err
		}
		if o.accepted() {
			out = append(out, Finding{Severity: Low, Title: "The broker accepts a SUBSCRIBE requesting QoS 3",
				Evidence: fmt.Sprintf("As %s on %s: SUBSCRIBE to %q requesting QoS 3: %s; the specification requires the broker to close the connection.",
					p.id, p.ep.URL(), sub+"/qos3", o),
				Remediation: remedyUpgrade})
		}
	}
	return out, nil
}

// probeTopics opens a prober and finds the topic it may publish under and
// the one it may subscribe under ("" when it may not); it skips when it
// may do neither. The caller closes the prober.
func (env *Env) probeTopics(ctx context.Context, what string) (p *prober, pub, sub string, err error) {
	p, err = env.newProber(ctx, what)
	if err != nil {
		return nil, "", "", err
	}
	pub, pubWhy, err := p.writable(ctx)
	if err == nil {
		var subWhy string
		sub, subWhy, err = p.subscribable(ctx)
		if err == nil && pub == "" && sub == "" {
			err = Skip("%s may neither publish nor subscribe under the audit's topics (%s; %s)", p.id, pubWhy, subWhy)
		}
	}
	if err != nil {
		p.close()
		return nil, "", "", err
	}
	return p, pub, sub, nil
}
