package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/users"
)

// IngestHandler stores a message published on one of Config.IngestFilters
// (Config.Ingest). With wait, it returns only once the message is durable
// (or has nothing to store); an error means it is not.
//
// A QoS 1 or 2 message from a client gets its PUBACK (or PUBREC) only
// once the handler has stored it, so that an acknowledged message survives
// a crash of Vigil. QoS 0 messages, wills and Vigil's own messages are
// handed over without waiting. If the handler fails for a message that
// waits, the client's connection is ended without an acknowledgement (the
// client sends it again when it reconnects); that happens only when the
// broker is closing.
type IngestHandler = func(ctx context.Context, topic string, payload []byte, clientID string, wait bool) error

// ingestHook calls the ingest handler. It comes after every hook that may
// refuse a message (ACLs, quotas): what it stores has passed them.
type ingestHook struct {
	mqtt.HookBase
	filters []string
	h       IngestHandler
	ctx     context.Context // ends when the broker closes: nobody waits any more
	srv     *Server
	stop    func(cl *mqtt.Client, err error)

	mu       sync.RWMutex
	closing  bool           // take no more messages that wait
	inflight sync.WaitGroup // messages being stored
}

// drain stops taking messages that wait to be stored (their clients are
// disconnected without an acknowledgement) and waits up to grace for
// those being stored; then nobody waits any more.
func (h *ingestHook) drain(grace time.Duration, cancel context.CancelFunc) {
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cancel()
		<-done
	}
	cancel()
}

func (h *ingestHook) ID() string { return "vigil-ingest" }

func (h *ingestHook) Provides(b byte) bool { return b == mqtt.OnPublish || b == mqtt.OnWillSent }

// match returns the handler if topic matches one of its filters.
func (h *ingestHook) match(topic string) IngestHandler {
	if h.h == nil {
		return nil
	}
	for _, f := range h.filters {
		if users.MatchTopic(f, topic) {
			return h.h
		}
	}
	return nil
}

var errNotStored = errors.New("the message could not be stored: Vigil is shutting down")

// OnPublish runs on the publisher's goroutine before mochi acknowledges
// the message and delivers it.
func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	f := h.match(pk.TopicName)
	if f == nil || pk.Ignore {
		return pk, nil
	}
	wait := pk.FixedHeader.Qos > 0 && !cl.Net.Inline
	h.mu.RLock()
	if h.closing && wait {
		h.mu.RUnlock()
		h.stop(cl, errNotStored)
		return pk, packets.ErrRejectPacket
	}
	h.inflight.Add(1)
	h.mu.RUnlock()
	defer h.inflight.Done()
	if err := f(h.ctx, pk.TopicName, pk.Payload, cl.ID, wait); err != nil && wait {
		h.srv.rlog.Info("ingest-not-stored", "a message was not stored: its client is disconnected without an acknowledgement and sends it again when it reconnects",
			"client_id", cl.ID, "topic", pk.TopicName, "error", err.Error())
		h.stop(cl, errNotStored)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// willWait is how long a will may wait for room in the handler's queue.
const willWait = 5 * time.Second

// OnWillSent hands a will over: mochi sends wills to subscribers directly,
// without OnPublish. A will comes as its client's connection ends, also
// while the broker closes, after h.ctx has ended: it gets a context of its
// own, so that the wills of the clients the closing broker disconnects
// are stored (the handler is closed after the broker).
func (h *ingestHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if f := h.match(pk.TopicName); f != nil {
		ctx, cancel := context.WithTimeout(context.Background(), willWait)
		defer cancel()
		if err := f(ctx, pk.TopicName, pk.Payload, cl.ID, false); err != nil {
			h.srv.rlog.Info("will-not-stored", "a last will was not stored", "client_id", cl.ID, "topic", pk.TopicName, "error", err.Error())
		}
	}
}
