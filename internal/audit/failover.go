package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/rnd"
)

// failover: given several URLs of one deployment, can clients move between
// them, and do their messages and sessions come along?

// untestedError is a pair the audit's own probes could not test: no topic
// both identities may use, or a subscription or publish refused. The check
// then fails for that pair rather than report what it did not see.
type untestedError struct{ err error }

func (e *untestedError) Error() string { return e.err.Error() }
func (e *untestedError) Unwrap() error { return e.err }

func untested(format string, args ...any) error {
	return &untestedError{fmt.Errorf(format, args...)}
}

func checkFailover(ctx context.Context, env *Env) ([]Finding, error) {
	if len(env.All) < 2 {
		return nil, Skip("give two or more URLs of one deployment to check failover")
	}
	var lines, stuck, notTested []string
	crossFail, sessionFail, moved := 0, 0, 0
	for i := range env.All {
		a, b := env.All[i], env.All[(i+1)%len(env.All)]
		if len(env.All) == 2 && i == 1 {
			break // one pair, both ways below
		}
		for _, pair := range [][2]*Env{{a, b}, {b, a}} {
			line, cross, session, err := failoverPair(ctx, pair[0], pair[1])
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			var u *untestedError
			switch {
			case errors.As(err, &u):
				notTested = append(notTested, fmt.Sprintf("%s → %s: %v", pair[0].Target.Input, pair[1].Target.Input, err))
				continue
			case err != nil:
				l := fmt.Sprintf("%s → %s: %v", pair[0].Target.Input, pair[1].Target.Input, err)
				stuck = append(stuck, l)
				lines = append(lines, l)
				continue
			}
			moved++
			lines = append(lines, line)
			if !cross {
				crossFail++
			}
			if !session {
				sessionFail++
			}
		}
	}
	var fs []Finding
	remedyMove := "Give the URLs of one deployment, reachable with the same credentials (--username), " +
		"so that a client that loses one broker can connect to another."
	switch {
	case len(stuck) > 0 && moved == 0:
		fs = append(fs, Finding{Severity: Medium, Title: "Clients cannot move between these brokers",
			Evidence: strings.Join(lines, "\n"), Remediation: remedyMove})
	case len(stuck) > 0:
		fs = append(fs, Finding{Severity: Medium, Title: fmt.Sprintf("Clients cannot move between some of these brokers (%s)", countNoun(len(stuck), "pair")),
			Evidence: "Cannot move:\n" + strings.Join(stuck, "\n") + "\n\nAll pairs:\n" + strings.Join(lines, "\n"), Remediation: remedyMove})
	}
	if crossFail > 0 {
		fs = append(fs, Finding{Severity: Medium, Title: "Messages published on one broker do not reach clients of the other",
			Evidence: strings.Join(lines, "\n"),
			Remediation: "A client that fails over misses what is published on the broker it left: bridge the brokers " +
				"(Mosquitto 'connection' bridges both ways), cluster them (EMQX), or have publishers use every broker."})
	}
	if sessionFail > 0 {
		fs = append(fs, Finding{Severity: Low, Title: "Persistent sessions do not survive moving to another broker",
			Evidence: strings.Join(lines, "\n"),
			Remediation: "Subscriptions and queued messages of a client stay on the broker it left: clients must subscribe again " +
				"after failing over (clean start), or use a clustered broker that shares sessions (EMQX)."})
	}
	if len(fs) == 0 && moved > 0 {
		fs = append(fs, Finding{Severity: Info, Title: "Clients can fail over with their messages and sessions",
			Evidence: strings.Join(lines, "\n"), Remediation: "Nothing to do."})
	}
	if len(notTested) > 0 {
		// The findings of the pairs that were tested stand; the others
		// are the check's error.
		return fs, fmt.Errorf("the audit's probes could not test %s: %s", countNoun(len(notTested), "pair"), strings.Join(notTested, "; "))
	}
	return fs, nil
}

// failoverPair moves a client from a to b: it measures the reconnect time,
// whether a message published on a reaches a subscriber on b, and whether
// a persistent session made on a is present on b. A client that cannot
// connect or move is an error; probes that the brokers' ACLs refuse are an
// *untestedError.
func failoverPair(ctx context.Context, a, b *Env) (line string, cross, session bool, err error) {
	epA, okA := a.Primary()
	epB, okB := b.Primary()
	idA, idB := a.Identity(), b.Identity()
	if !okA || !okB || idA == nil || idB == nil {
		return "", false, false, fmt.Errorf("cannot connect to both")
	}
	topic, err := failoverTopic(ctx, a, b, epA, epB, idA, idB)
	if err != nil {
		return "", false, false, err
	}
	// A persistent session on a, subscribed to the topic.
	clientID := a.ClientID("failover")
	expiry := uint32(60)
	sa, err := a.connectPersistent(ctx, epA, clientID, idA, expiry)
	if err != nil {
		return "", false, false, fmt.Errorf("connect to %s: %w", epA.URL(), err)
	}
	err = subscribeOne(ctx, a, sa, topic)
	sa.Close()
	if err != nil {
		return "", false, false, untested("subscribe to %s on %s: %w", topic, epA.URL(), err)
	}
	defer func() {
		// Clean up the session left on a.
		if s, err := a.connectPersistent(ctx, epA, clientID, idA, 0); err == nil {
			s.Close()
		}
	}()
	// The client moves to b: how long until it is connected, and is its
	// session there?
	start := time.Now()
	sb, err := b.connectPersistent(ctx, epB, clientID, idB, 0)
	if err != nil {
		return "", false, false, fmt.Errorf("reconnect to %s: %w", epB.URL(), err)
	}
	defer sb.Close()
	reconnect := time.Since(start)
	session = sb.Connack.SessionPresent
	// Does a message published on a reach a subscriber on b?
	if err := subscribeOne(ctx, b, sb, topic); err != nil {
		return "", false, false, untested("subscribe to %s on %s: %w", topic, epB.URL(), err)
	}
	pa, err := a.Connect(ctx, epA, a.ClientID("failpub"), idA)
	if err != nil {
		return "", false, false, fmt.Errorf("connect to %s: %w", epA.URL(), err)
	}
	defer pa.Close()
	took, code, err := probePublish(ctx, a, pa, topic, []byte("vigil audit failover probe"))
	switch {
	case err != nil:
		return "", false, false, untested("publish to %s on %s: %w", topic, epA.URL(), err)
	case !took:
		return "", false, false, untested("publish to %s on %s refused (PUBACK 0x%02x, or none)", topic, epA.URL(), code)
	}
	cross = len(sb.Collect(ctx, time.Second, 1)) > 0
	line = fmt.Sprintf("%s → %s: reconnected in %s; session present: %v; a message published on %s reached %s: %v",
		a.Target.Input, b.Target.Input, reconnect.Round(100*time.Microsecond), session, a.Target.Input, b.Target.Input, cross)
	return line, cross, session, nil
}

// failoverTopic finds the topic a pair is tested on: under the first probe
// base both identities share where a QoS 1 message goes round on each
// broker (so that each identity's ACL lets it publish and read there; a
// granted SUBACK alone does not tell, as Mosquitto filters what it
// delivers).
func failoverTopic(ctx context.Context, a, b *Env, epA, epB Endpoint, idA, idB *Identity) (string, error) {
	type side struct {
		env      *Env
		ep       Endpoint
		sub, pub *Session
	}
	sides := []*side{{env: a, ep: epA}, {env: b, ep: epB}}
	for _, s := range sides {
		id := idA
		if s.env == b {
			id = idB
		}
		var err error
		if s.sub, err = s.env.Connect(ctx, s.ep, s.env.ClientID("failsub"), id); err != nil {
			return "", fmt.Errorf("connect to %s: %w", s.ep.URL(), err)
		}
		defer s.sub.Close()
		if s.pub, err = s.env.Connect(ctx, s.ep, s.env.ClientID("failpub"), id); err != nil {
			return "", fmt.Errorf("connect to %s: %w", s.ep.URL(), err)
		}
		defer s.pub.Close()
	}
	nonce := rnd.Hex(4)
	basesB := b.probeBases(idB, nonce)
	var tried []string
bases:
	for _, base := range a.probeBases(idA, nonce) {
		if !slices.Contains(basesB, base) {
			continue // the message must cross on one topic
		}
		topic := base + "/failover"
		for _, s := range sides {
			if err := subscribeOne(ctx, s.env, s.sub, topic); err != nil {
				tried = append(tried, fmt.Sprintf("SUBSCRIBE %s on %s: %v", topic, s.ep.URL(), err))
				continue bases
			}
			payload := "vigil audit failover probe " + rnd.Hex(4)
			took, code, err := probePublish(ctx, s.env, s.pub, topic, []byte(payload))
			if err != nil {
				return "", untested("publish to %s on %s: %w", topic, s.ep.URL(), err)
			}
			if !took || !s.sub.Await(ctx, topic, payload, 500*time.Millisecond) {
				tried = append(tried, fmt.Sprintf("PUBLISH %s on %s: PUBACK 0x%02x, not delivered", topic, s.ep.URL(), code))
				continue bases
			}
		}
		return topic, nil
	}
	return "", untested("no topic where %s may publish and read on %s and %s on %s (%s)",
		idA, epA.URL(), idB, epB.URL(), strings.Join(tried, "; "))
}

// subscribeOne subscribes a session to a topic at QoS 1; a refusal is an
// error.
func subscribeOne(ctx context.Context, env *Env, s *Session, topic string) error {
	sctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
	defer cancel()
	sa, err := s.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	switch {
	case sa != nil && len(sa.Reasons) > 0 && !granted(sa.Reasons, 0):
		return fmt.Errorf("refused (SUBACK %s)", reasonName(sa.Reasons[0]))
	case err != nil:
		return err
	}
	return nil
}

// connectPersistent connects with CleanStart false and a session expiry.
func (env *Env) connectPersistent(ctx context.Context, ep Endpoint, clientID string, id *Identity, expiry uint32) (*Session, error) {
	s, err := env.connectWith(ctx, ep, clientID, id, func(cp *paho.Connect) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}
