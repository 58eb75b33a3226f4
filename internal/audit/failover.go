package audit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// failover: given several URLs of one deployment, can clients move between
// them, and do their messages and sessions come along?

func init() {
	register(&Check{ID: "failover", Title: "Clients can move between the brokers of one deployment", Run: checkFailover, Multi: true})
}

func checkFailover(ctx context.Context, env *Env) ([]Finding, error) {
	if len(env.All) < 2 {
		return nil, Skip("give two or more URLs of one deployment to check failover")
	}
	var lines []string
	crossFail, sessionFail, moved := 0, 0, 0
	for i := range env.All {
		a, b := env.All[i], env.All[(i+1)%len(env.All)]
		if len(env.All) == 2 && i == 1 {
			break // one pair, both ways below
		}
		for _, pair := range [][2]*Env{{a, b}, {b, a}} {
			line, cross, session, err := failoverPair(ctx, pair[0], pair[1])
			if err != nil {
				lines = append(lines, fmt.Sprintf("%s → %s: %v", pair[0].Target.Input, pair[1].Target.Input, err))
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
	if moved == 0 {
		return []Finding{{Severity: Medium, Title: "Clients cannot move between these brokers",
			Evidence: strings.Join(lines, "\n"),
			Remediation: "Give the URLs of one deployment, reachable with the same credentials (--username), " +
				"so that a client that loses one broker can connect to another."}}, nil
	}
	var fs []Finding
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
	if len(fs) == 0 {
		fs = append(fs, Finding{Severity: Info, Title: "Clients can fail over with their messages and sessions",
			Evidence: strings.Join(lines, "\n"), Remediation: "Nothing to do."})
	}
	return fs, nil
}

// failoverPair moves a client from a to b: it measures the reconnect time,
// whether a message published on a reaches a subscriber on b, and whether
// a persistent session made on a is present on b.
func failoverPair(ctx context.Context, a, b *Env) (line string, cross, session bool, err error) {
	epA, okA := a.Primary()
	epB, okB := b.Primary()
	idA, idB := a.Identity(), b.Identity()
	if !okA || !okB || idA == nil || idB == nil {
		return "", false, false, fmt.Errorf("cannot connect to both")
	}
	topic := "vigil-audit/failover/" + randomHex(6)
	// A persistent session on a, subscribed to the topic.
	clientID := a.ClientID("failover")
	expiry := uint32(60)
	sa, err := a.connectPersistent(ctx, epA, clientID, idA, expiry)
	if err != nil {
		return "", false, false, fmt.Errorf("connect to %s: %w", epA.URL(), err)
	}
	sctx, cancel := context.WithTimeout(ctx, a.Opts.Timeout)
	_, err = sa.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	cancel()
	if err != nil {
		sa.Close()
		return "", false, false, fmt.Errorf("subscribe on %s: %w", epA.URL(), err)
	}
	sa.Close()
	// The client moves to b: how long until it is connected, and is its
	// session there?
	start := time.Now()
	sb, err := b.connectPersistent(ctx, epB, clientID, idB, 0)
	if err != nil {
		return "", false, false, fmt.Errorf("reconnect to %s: %w", epB.URL(), err)
	}
	reconnect := time.Since(start)
	session = sb.Connack.SessionPresent
	// Does a message published on a reach a subscriber on b?
	sctx, cancel = context.WithTimeout(ctx, b.Opts.Timeout)
	_, err = sb.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	cancel()
	if err == nil {
		if pa, perr := a.Connect(ctx, epA, a.ClientID("failpub"), idA); perr == nil {
			pctx, cancel := context.WithTimeout(ctx, a.Opts.Timeout)
			pa.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("vigil audit failover probe")})
			cancel()
			cross = len(sb.Collect(ctx, time.Second, 1)) > 0
			pa.Close()
		}
	}
	sb.Close()
	// Clean up the session left on a.
	if s, err := a.connectPersistent(ctx, epA, clientID, idA, 0); err == nil {
		s.Close()
	}
	line = fmt.Sprintf("%s → %s: reconnected in %s; session present: %v; a message published on %s reached %s: %v",
		a.Target.Input, b.Target.Input, reconnect.Round(100*time.Microsecond), session, a.Target.Input, b.Target.Input, cross)
	return line, cross, session, nil
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
