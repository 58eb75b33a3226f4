package audit

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/rnd"
)

// QoS support and round-trip latency.

// loop is a subscriber and a publisher on one fresh topic.
type loop struct {
	sub, pub *Session
	topic    string
}

func (env *Env) newLoop(ctx context.Context, what string) (*loop, *Identity, error) {
	sub, id, err := env.session(ctx, what+"s")
	if err != nil {
		return nil, nil, err
	}
	pub, _, err := env.session(ctx, what+"p")
	if err != nil {
		sub.Close()
		return nil, nil, err
	}
	l := &loop{sub: sub, pub: pub}
	// The first probe base where a QoS 1 message goes round: brokers may
	// grant a subscription and still refuse the publish, or filter what
	// they deliver by ACL.
	var tried []string
	for _, base := range env.probeBases(id, rnd.Hex(4)) {
		topic := base + "/" + what
		sctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
		sa, err := sub.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 2}}})
		cancel()
		if err != nil || !granted(sa.Reasons, 0) {
			tried = append(tried, fmt.Sprintf("SUBSCRIBE %s refused", topic))
			continue
		}
		took, code, err := probePublish(ctx, env, pub, topic, []byte("vigil audit: loop probe"))
		if err != nil {
			l.close()
			return nil, nil, err
		}
		if took && len(sub.Collect(ctx, 500*time.Millisecond, 1)) == 1 {
			l.topic = topic
			return l, id, nil
		}
		tried = append(tried, fmt.Sprintf("PUBLISH %s: PUBACK 0x%02x, not delivered", topic, code))
	}
	l.close()
	return nil, nil, Skip("%s found no topic to send itself messages on (%s)", id, strings.Join(tried, "; "))
}

func (l *loop) close() { l.sub.Close(); l.pub.Close() }

func checkQoS(ctx context.Context, env *Env) ([]Finding, error) {
	l, id, err := env.newLoop(ctx, "qos")
	if err != nil {
		return nil, err
	}
	defer l.close()
	var got []string
	var missing []string
	for qos := byte(0); qos <= 2; qos++ {
		pctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
		_, err := l.pub.Publish(pctx, &paho.Publish{Topic: l.topic, QoS: qos, Payload: []byte{qos}})
		cancel()
		if err != nil {
			missing = append(missing, fmt.Sprintf("QoS %d publish: %v", qos, err))
			continue
		}
		ms := l.sub.Collect(ctx, env.Opts.Timeout, 1)
		if len(ms) == 0 {
			missing = append(missing, fmt.Sprintf("QoS %d: not delivered", qos))
			continue
		}
		got = append(got, fmt.Sprintf("QoS %d delivered at QoS %d", qos, ms[0].QoS))
	}
	maxQoS := "2"
	if p := l.sub.Connack.Properties; p != nil && p.MaximumQoS != nil {
		maxQoS = fmt.Sprint(*p.MaximumQoS)
	}
	ev := strings.Join(append(got, missing...), "\n") + "\nCONNACK maximum QoS: " + maxQoS + "; as " + id.String()
	if len(missing) > 0 {
		return []Finding{{Severity: Low, Title: "Not every QoS level is delivered", Evidence: ev,
			Remediation: "Clients that need delivery guarantees must get QoS 1 or 2; check the broker's max_qos settings and queue limits."}}, nil
	}
	return []Finding{{Severity: Info, Title: "QoS 0, 1 and 2 round trips work", Evidence: ev, Remediation: "Nothing to do."}}, nil
}

// latencyRun is how many messages each QoS sends, and how long the run
// may take at most; each QoS gets its share of what is left.
const (
	latencyMessages = 50
	latencyMax      = 2 * time.Second
	latencyWait     = 500 * time.Millisecond // for one message
)

// latencyLevel is what one QoS level measured: no round trip and nothing
// lost means it was not measured.
type latencyLevel struct {
	qos  byte
	rtts []time.Duration // sorted
	lost int
}

func checkLatency(ctx context.Context, env *Env) ([]Finding, error) {
	l, _, err := env.newLoop(ctx, "lat")
	if err != nil {
		return nil, err
	}
	defer l.close()
	end := time.Now().Add(latencyMax)
	var levels []latencyLevel
	for qos := byte(0); qos <= 2; qos++ {
		// This level's share of the time left: a level that finishes
		// early leaves its time to the next.
		deadline := time.Now().Add(time.Until(end) / time.Duration(3-qos))
		lv := latencyLevel{qos: qos}
		for i := 0; i < latencyMessages && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
			// Each message is told apart by its payload, so that one
			// that comes late is not taken for the next one's round trip.
			payload := fmt.Sprintf("%d/%d", qos, i)
			start := time.Now()
			pctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
			_, err := l.pub.Publish(pctx, &paho.Publish{Topic: l.topic, QoS: qos, Payload: []byte(payload)})
			cancel()
			if err != nil || !l.sub.Await(ctx, l.topic, payload, latencyWait) {
				lv.lost++
				continue
			}
			lv.rtts = append(lv.rtts, time.Since(start))
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slices.Sort(lv.rtts)
		levels = append(levels, lv)
	}
	return latencyFindings(levels)
}

// latencyFindings judges the levels: the title names the levels measured
// and those that were not.
func latencyFindings(levels []latencyLevel) ([]Finding, error) {
	var lines, measured, unmeasured []string
	worst := Info
	lostAny := false
	for _, lv := range levels {
		sent := len(lv.rtts) + lv.lost
		if sent == 0 {
			unmeasured = append(unmeasured, strconv.Itoa(int(lv.qos)))
			lines = append(lines, fmt.Sprintf("QoS %d: not measured (its share of the %s run was used up)", lv.qos, latencyMax))
			continue
		}
		measured = append(measured, strconv.Itoa(int(lv.qos)))
		p50, p99 := pct(lv.rtts, 50), pct(lv.rtts, 99)
		lines = append(lines, fmt.Sprintf("QoS %d: %d messages, p50 %s, p99 %s, %d lost", lv.qos, sent, p50, p99, lv.lost))
		lostAny = lostAny || lv.lost > 0
		if lv.lost > 0 && lv.qos > 0 {
			worst = max(worst, Medium)
		}
		if p99 > time.Second {
			worst = max(worst, Low)
		}
	}
	if len(measured) == 0 {
		return nil, fmt.Errorf("no QoS level could be measured within %s", latencyMax)
	}
	title := "Round trips work at QoS " + andList(measured) + " without loss"
	if lostAny {
		title = "Round trips work at QoS " + andList(measured) + "; some QoS 0 messages were lost (QoS 0 may lose them)"
	}
	f := Finding{Severity: worst, Title: title, Evidence: strings.Join(lines, "\n"), Remediation: "Nothing to do."}
	if worst > Info {
		f.Title = "Messages are slow or lost"
		f.Remediation = "Check the broker's load ($SYS), its queue limits (Mosquitto max_queued_messages, EMQX mqueue, Vigil's per-client queue) and the network."
	}
	if len(unmeasured) > 0 {
		f.Title += "; QoS " + andList(unmeasured) + " not measured"
	}
	return []Finding{f}, nil
}

// andList joins words as "a", "a and b", "a, b and c".
func andList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, len(d)*p/100)].Round(10 * time.Microsecond)
}
