package broker

import (
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/ratelog"
)

// backlogHook keeps subscribers from losing QoS 1 and 2 messages when they
// fall behind for a while, and counts what is lost when one falls behind
// for good.
//
// mochi queues each client's outbound messages in a channel of
// mqtt.max_queued_messages and drops what does not fit (as Mosquitto's
// max_queued_messages does); it also drops a QoS 1 or 2 message for a
// client that has MaxInflight messages unacknowledged. A subscriber
// that keeps up on average still overflows either when a burst arrives, or
// when it or its writer goroutine is starved of CPU by thousands of
// publishers. So before a QoS 1 or 2 message is queued for a subscriber
// whose queue is three quarters full (counting the messages let through
// and not yet queued: see backlog.admitted), or a quarter of whose window
// is unacknowledged, the publisher waits (on its own goroutine:
// back-pressure, as the telemetry pipeline does) until both are below it
// again, publishers going on one for each message the subscriber drains.
// Once publishers have been held back for one subscriber for
// mqtt.slow_subscriber_wait in one stretch, it is slow: nobody waits for
// it for the next slowFor, and what does not fit is dropped, counted per
// client (SlowSubscribers), in vigil_mqtt_subscriber_dropped_total and in
// the log. Vigil's own messages never wait.
type backlogHook struct {
	mqtt.HookBase
	wait         time.Duration // 0: never wait (drop at once)
	high, spare  int           // queue length where publishers wait; room left above it
	inflightHigh int           // the same for unacknowledged messages
	inflight     int           // the window: more unacknowledged are dropped
	log          *ratelog.Logger
	now          func() time.Time

	clients sync.Map // *mqtt.Client -> *backlog, for clients that have been behind

	dropped *prometheus.CounterVec // by qos
	waits   prometheus.Counter
}

// backlog is the state of a client that QoS 1 and 2 messages are sent to.
type backlog struct {
	// admitted counts the messages let through OnQosPublish and not yet
	// written or dropped: those in its queue, and those on their way to it.
	// A publisher that checked the queue's length, then was descheduled
	// before mochi queued its message (a GC's stack scan preempts
	// thousands of goroutines at once), is counted here while the queue
	// does not show it yet: gating on the queue alone, hundreds of such
	// publishers overflowed a queue of 512 in `vigil bench`.
	admitted atomic.Int64

	// tokens admits waiting publishers one at a time: one token for each
	// packet written to the client and each acknowledgement it sends, so
	// that what goes into its queue is what came out (a released crowd
	// would overflow it). gone is closed when the client disconnects.
	tokens chan struct{}
	gone   chan struct{}

	mu        sync.Mutex
	slowUntil time.Time // nobody waits until then
	// behindSince starts the stretch of waits that lastWait ends.
	behindSince, lastWait time.Time
	dropped               int64     // messages lost, since it connected
	since                 time.Time // of the first loss
	last                  time.Time // of the latest loss
}

// MaxInflight is how many QoS 1 and 2 messages a client may have
// unacknowledged (mochi's MaximumInflight, all the packet ids there are);
// beyond it they are dropped. A subscriber briefly seconds behind a large
// fleet needs that room. Publishers wait for a subscriber from a quarter of
// it: a publisher held back (OnQosPublish) already holds a place in the
// window, so the rest is room for thousands of them. A subscriber that does
// not acknowledge can hold that many messages in memory: up to
// mqtt.max_packet_size each.
const MaxInflight = 65535

// slowFor is how long nobody waits for a subscriber that did not catch up
// within slow_subscriber_wait: a subscriber that stays behind may hold
// publishers back at most this often.
const slowFor = 30 * time.Second

func newBacklogHook(queue, inflight int, wait time.Duration, log *ratelog.Logger) *backlogHook {
	h := &backlogHook{
		wait: wait, high: queue * 3 / 4, spare: queue - queue*3/4, log: log, now: time.Now,
		inflightHigh: inflight / 4, inflight: inflight,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_mqtt_subscriber_dropped_total",
			Help: "Messages not delivered to a subscriber because its queue (mqtt.max_queued_messages) was full, by QoS.",
		}, []string{"qos"}),
		waits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_mqtt_publisher_waits_total",
			Help: "Times a publisher waited for a subscriber's queue to have room (mqtt.slow_subscriber_wait).",
		}),
	}
	for _, q := range []string{"0", "1", "2"} {
		h.dropped.WithLabelValues(q)
	}
	return h
}

func (h *backlogHook) ID() string { return "vigil-backlog" }

func (h *backlogHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnQosPublish, mqtt.OnPacketEncode, mqtt.OnPacketSent, mqtt.OnQosComplete, mqtt.OnPublishDropped, mqtt.OnDisconnect:
		return true
	}
	return false
}

// outboundField locates mochi's per-client outbound queue, which v2.7.9
// does not export; its length is read through reflect (a channel's length
// may be read at any time).
var outboundField = func() []int {
	f, ok := reflect.TypeFor[mqtt.ClientState]().FieldByName("outbound")
	if !ok || f.Type.Kind() != reflect.Chan {
		panic("mochi's ClientState has no outbound channel: the backlog hook needs updating")
	}
	return f.Index
}()

// queued returns how many messages wait in a client's outbound queue.
func queued(cl *mqtt.Client) int {
	return reflect.ValueOf(&cl.State).Elem().FieldByIndex(outboundField).Len()
}

// OnQosPublish runs on the publisher's goroutine just before a QoS 1 or 2
// message is queued for cl: while cl is behind, the publisher waits for a
// token, as many going on as cl's queue and window drain.
//
// Two ways of being behind are told apart. A full queue is the broker's
// writer to cl falling behind (thousands of publishers' goroutines leave it
// little CPU): publishers wait as long as it makes progress, since that
// is what gives it the CPU back; only a writer that writes nothing for
// slow_subscriber_wait (cl stopped reading) makes cl slow. A full window is
// cl not acknowledging: once publishers have been held back for it for
// slow_subscriber_wait in one stretch (waits that end less than a second
// before the next begins), or a wait ran out, cl is slow, so that a client
// that reads slowly on purpose cannot set the pace of everyone publishing
// to its subscriptions. Retained messages sent to cl as it subscribes never
// wait: they are sent on cl's own goroutine, which is also the one that
// reads its acknowledgements.
func (h *backlogHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || resends > 0 || cl.Closed() {
		return // a resend is already counted, or is written at once; a
		// client gone (a session kept) queues nothing until it is back, as
		// another *mqtt.Client
	}
	b := h.backlogOf(cl)
	if h.wait <= 0 || pk.FixedHeader.Retain || pk.Origin == mqtt.InlineClientId {
		b.admitted.Add(1) // queued without waiting
		return
	}
	if h.admit(cl, b) {
		return
	}
	now := h.now()
	b.mu.Lock()
	if now.Before(b.slowUntil) {
		b.mu.Unlock()
		b.admitted.Add(1) // queued, or dropped, without waiting
		return
	}
	unacked := cl.State.Inflight.Len() >= h.inflightHigh
	left := h.wait
	if unacked {
		if now.Sub(b.lastWait) > time.Second {
			b.behindSince = now // a new stretch
		}
		if left = h.wait - now.Sub(b.behindSince); left <= 0 {
			b.mu.Unlock()
			h.markSlow(cl, b)
			b.admitted.Add(1)
			return
		}
	}
	b.mu.Unlock()
	h.waits.Inc()
	timer := time.NewTimer(left)
	defer timer.Stop()
	if unacked {
		defer func() {
			b.mu.Lock()
			b.lastWait = h.now()
			b.mu.Unlock()
		}()
	}
	for !h.admit(cl, b) {
		select {
		case <-b.tokens:
			if !unacked && cl.State.Inflight.Len() < h.inflightHigh {
				// The writer wrote: it makes progress.
				timer.Reset(h.wait)
			}
		case <-b.gone:
			return
		case <-timer.C:
			h.markSlow(cl, b)
			b.admitted.Add(1)
			return
		}
	}
}

// admit counts a message in for cl and reports true when cl is not
// behind; otherwise it counts nothing and reports false.
func (h *backlogHook) admit(cl *mqtt.Client, b *backlog) bool {
	if cl.State.Inflight.Len() >= h.inflightHigh || queued(cl) >= h.high {
		return false
	}
	if b.admitted.Add(1) > int64(h.high) {
		b.admitted.Add(-1)
		return false
	}
	return true
}

// settled counts a message of cl's out: written or dropped.
func (b *backlog) settled() {
	for {
		n := b.admitted.Load()
		if n <= 0 || b.admitted.CompareAndSwap(n, n-1) {
			return // never below 0: resends were not counted in
		}
	}
}

// markSlow marks cl slow: nobody waits for it for slowFor.
func (h *backlogHook) markSlow(cl *mqtt.Client, b *backlog) {
	b.mu.Lock()
	b.slowUntil = h.now().Add(slowFor)
	b.mu.Unlock()
	h.log.Warn("slow-subscriber", "mqtt subscriber is not keeping up; its messages may be dropped (mqtt.max_queued_messages)",
		"client_id", cl.ID, "username", string(cl.Properties.Username), "queued", queued(cl),
		"unacknowledged", cl.State.Inflight.Len(), "behind_for", h.wait.String())
}

func (h *backlogHook) backlogOf(cl *mqtt.Client) *backlog {
	if v, ok := h.clients.Load(cl); ok {
		return v.(*backlog)
	}
	v, _ := h.clients.LoadOrStore(cl, &backlog{tokens: make(chan struct{}, h.spare), gone: make(chan struct{})})
	return v.(*backlog)
}

// OnPacketSent runs on cl's writer after each packet, OnQosComplete on
// cl's reader after each acknowledgement: each lets one waiting publisher
// go on.
func (h *backlogHook) OnPacketSent(cl *mqtt.Client, _ packets.Packet, _ []byte) { h.token(cl) }

// OnPacketEncode runs as mochi is about to write a packet to cl, out of
// its queue: a QoS 1 or 2 message counted in by OnQosPublish is counted
// out, whether it is then written or not (too large for cl, say).
func (h *backlogHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0 {
		if v, ok := h.clients.Load(cl); ok {
			v.(*backlog).settled()
		}
	}
	return pk
}

func (h *backlogHook) OnQosComplete(cl *mqtt.Client, _ packets.Packet) { h.token(cl) }

func (h *backlogHook) token(cl *mqtt.Client) {
	v, ok := h.clients.Load(cl)
	if !ok {
		return
	}
	select {
	case v.(*backlog).tokens <- struct{}{}:
	default: // nobody waits, or enough tokens wait
	}
}

// OnPublishDropped counts a message mochi dropped for cl.
func (h *backlogHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos > 0 {
		h.backlogOf(cl).settled()
	}
	h.dropped.WithLabelValues(string(rune('0' + min(pk.FixedHeader.Qos, 2)))).Inc()
	n := h.count(cl)
	h.log.Warn("subscriber-dropped", "mqtt subscriber's queue is full: message dropped", "client_id", cl.ID,
		"username", string(cl.Properties.Username), "topic", pk.TopicName, "dropped_so_far", n)
}

func (h *backlogHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if v, ok := h.clients.LoadAndDelete(cl); ok {
		close(v.(*backlog).gone)
	}
}

// SlowSubscriber is a connected client that lost messages because its
// queue was full.
type SlowSubscriber struct {
	ClientID string    `json:"client_id"`
	Username string    `json:"username,omitempty"`
	Dropped  int64     `json:"dropped"`
	Since    time.Time `json:"since"` // the first loss
	Last     time.Time `json:"last"`  // the latest
}

// slow lists the connected clients that lost messages within the last
// window, by client id (and forgets clients that have gone).
// droppedUnacked counts a QoS 1 or 2 message mochi dropped for cl without
// telling the hooks: cl had MaxInflight messages unacknowledged (mochi
// only logs it; see quietHandler).
func (h *backlogHook) droppedUnacked(cl *mqtt.Client) {
	h.dropped.WithLabelValues("1").Inc()
	h.count(cl)
	h.log.Warn("subscriber-unacked", "mqtt subscriber has too many messages unacknowledged: message dropped", "client_id", cl.ID,
		"username", string(cl.Properties.Username), "limit", h.inflight)
}

// count adds a lost message to cl's count.
func (h *backlogHook) count(cl *mqtt.Client) int64 {
	b := h.backlogOf(cl)
	now := h.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropped++
	if b.since.IsZero() {
		b.since = now
	}
	b.last = now
	return b.dropped
}

func (h *backlogHook) slow(window time.Duration) []SlowSubscriber {
	now := h.now()
	var out []SlowSubscriber
	h.clients.Range(func(k, v any) bool {
		cl, b := k.(*mqtt.Client), v.(*backlog)
		if cl.Closed() { // counted after it went: forget it
			h.clients.Delete(cl)
			return true
		}
		b.mu.Lock()
		if b.dropped > 0 && now.Sub(b.last) < window {
			out = append(out, SlowSubscriber{ClientID: cl.ID, Username: string(cl.Properties.Username), Dropped: b.dropped, Since: b.since, Last: b.last})
		}
		b.mu.Unlock()
		return true
	})
	slices.SortFunc(out, func(a, b SlowSubscriber) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

// SlowSubscribers lists the connected MQTT clients that lost messages in
// the last ten minutes because they did not keep up, with how many each
// lost since it connected.
func (s *Server) SlowSubscribers() []SlowSubscriber { return s.backlog.slow(10 * time.Minute) }
