package broker

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The messages waiting for a persistent session (clean start off, a
// session expiry) that is offline are kept in broker.bolt, so that a
// restart, graceful or a kill, delivers them when the session resumes,
// in the order they were queued.
//
// mochi keeps them in the session's in-flight map, but on its own would
// lose them at a restart and deliver them out of order:
//
//   - its bolt hook writes a message without its packet id, so that all of
//     a session's messages come back as packet 0, one overwriting the
//     next; Vigil reads the id back from the record's key;
//   - it resends a session's messages sorted on the low 16 bits of their
//     creation time in seconds, in random order within a second; Vigil
//     numbers each message as it is queued (its order, kept in the
//     record's sent field) and, just before mochi resends them, stands
//     the order in for the creation time, which it puts back as soon as
//     they are sent.
//
// A message is written as it is queued for a session that is offline
// (on the publisher's goroutine, before the broker reads the publisher's
// next packet: the publisher has its PUBACK by then, so a kill in those
// microseconds loses that one message), and when a session goes offline
// (or Vigil stops) with messages unacknowledged. It is deleted when it is
// acknowledged or dropped (message expiry, clean start, session expiry).
// Messages to connected clients are never written: they are acknowledged
// within milliseconds, and a kill loses those not yet acknowledged, as
// with Mosquitto between its autosaves.
type sessionQueue struct {
	mu   sync.Mutex
	last int64                            // the latest order given
	msgs map[string]map[uint16]*queuedMsg // by client id and packet id
	// settled is, by client id, the offline client whose unacknowledged
	// messages are numbered and on disk (keepUnacknowledged).
	settled map[string]*mqtt.Client
	n       atomic.Int64 // messages in msgs: acknowledgements skip the lock at 0

	gone sync.Map // *mqtt.Client -> chan struct{}, closed when its OnDisconnect has run
}

// queuedMsg is what Vigil knows of a message in a session's in-flight map.
type queuedMsg struct {
	order   int64 // the order it is delivered in
	created int64 // its creation time, while the order stands in for it
	faked   bool  // its Created is the order, for mochi's resend
	onDisk  bool
}

// sessionEnds reports whether cl's session ends with its connection.
func sessionEnds(cl *mqtt.Client) bool {
	return (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
}

// OnQosPublish writes a message queued for a session that is offline.
func (h *persistHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if !cl.Closed() || cl.IsTakenOver() || sessionEnds(cl) || cl.Net.Inline {
		return
	}
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	// Messages sent before cl went offline come first, even when this
	// one is queued before its OnDisconnect has run.
	h.settleLocked(cl, pk.PacketID)
	m := h.queue.get(cl.ID, pk.PacketID)
	if m == nil {
		h.queue.last++
		m = h.queue.add(cl.ID, pk.PacketID, &queuedMsg{order: h.queue.last, created: pk.Created})
	}
	if !m.onDisk {
		h.write(cl, pk, m)
	}
}

// write stores pk with m's order and creation time; the queue's lock is
// held.
func (h *persistHook) write(cl *mqtt.Client, pk packets.Packet, m *queuedMsg) {
	pk.Created = m.created
	// Outbound topic aliases are off (OnSessionEstablish), so pk has its
	// topic; an alias would only be good on its connection anyway.
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	h.Hook.OnQosPublish(cl, pk, m.order, 0)
	m.onDisk = true
}

func (h *persistHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { h.forget(cl, pk.PacketID) }
func (h *persistHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet)  { h.forget(cl, pk.PacketID) }

// forget deletes a message that was acknowledged or dropped. A session
// taken over hands its messages to the new connection, which mochi does by
// dropping them from the old one: those are not forgotten.
func (h *persistHook) forget(cl *mqtt.Client, id uint16) {
	if h.queue.n.Load() == 0 || cl.IsTakenOver() {
		return
	}
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	m := h.queue.get(cl.ID, id)
	if m == nil {
		return
	}
	h.queue.remove(cl.ID, id)
	if m.onDisk {
		h.Hook.OnQosComplete(cl, packets.Packet{PacketID: id})
	}
}

// OnDisconnect stores the client's session (mochi's hook) and, when the
// session stays, the messages it has not acknowledged.
func (h *persistHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.Hook.OnDisconnect(cl, err, expire)
	if ch, ok := h.queue.gone.LoadAndDelete(cl); ok {
		close(ch.(chan struct{}))
	}
	if expire || cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	h.keepUnacknowledged(cl)
}

// keepUnacknowledged writes the messages cl has not acknowledged that are
// not on disk yet, numbered in the order their packet ids were given.
func (h *persistHook) keepUnacknowledged(cl *mqtt.Client) {
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	h.settleLocked(cl, 0)
}

// settleLocked writes, once per disconnection, the messages cl has not
// acknowledged (but skip, a message being queued); the queue's lock is
// held.
func (h *persistHook) settleLocked(cl *mqtt.Client, skip uint16) {
	if h.queue.settled[cl.ID] == cl {
		return
	}
	h.queue.settled[cl.ID] = cl
	var fresh []packets.Packet
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if pk.PacketID == skip {
			continue
		}
		if m := h.queue.get(cl.ID, pk.PacketID); m == nil {
			fresh = append(fresh, pk)
		} else if !m.onDisk {
			h.write(cl, pk, m)
		}
	}
	for _, pk := range inIDOrder(fresh) {
		h.queue.last++
		h.write(cl, pk, h.queue.add(cl.ID, pk.PacketID, &queuedMsg{order: h.queue.last, created: pk.Created}))
	}
}

// inIDOrder sorts packets in the order their ids were given: mochi gives
// a client's ids one after the other, wrapping at 65535, so the oldest is
// the one after the widest gap between ids in use.
func inIDOrder(pks []packets.Packet) []packets.Packet {
	slices.SortFunc(pks, func(a, b packets.Packet) int { return cmp.Compare(a.PacketID, b.PacketID) })
	if len(pks) < 2 {
		return pks
	}
	start, widest := 0, int(pks[0].PacketID)+65536-int(pks[len(pks)-1].PacketID)
	for i := 1; i < len(pks); i++ {
		if gap := int(pks[i].PacketID) - int(pks[i-1].PacketID); gap > widest {
			start, widest = i, gap
		}
	}
	return append(pks[start:], pks[:start]...)
}

// OnSessionEstablish runs when a client that resumes a session has been
// authenticated, before mochi hands it the session's messages and resends
// them: it makes mochi resend them in order (see sessionQueue). A session
// whose connection is still up is first disconnected (mochi would do it
// next), so that no acknowledgement changes its messages meanwhile.
func (h *persistHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	// No outbound topic aliases (Mosquitto sends none either): mochi
	// would give a message queued for an offline session an alias and no
	// topic, which is no good on the connection it is resent on.
	cl.Properties.Props.TopicAliasMaximum = 0
	old, ok := h.mochi.Clients.Get(cl.ID)
	if pk.Connect.Clean || !ok || old == cl || (old.Properties.ProtocolVersion < 5 && old.Properties.Clean) || old.State.Inflight.Len() == 0 {
		return
	}
	if !old.Closed() {
		gone := make(chan struct{})
		h.queue.gone.Store(old, gone)
		_ = h.mochi.DisconnectClient(old, packets.ErrSessionTakenOver)
		select {
		case <-gone:
		case <-time.After(2 * time.Second): // its reader is stuck: leave mochi's order
			h.queue.gone.Delete(old)
			return
		}
	}
	pending := old.State.Inflight.GetAll(false)
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	var known, fresh []packets.Packet
	for _, p := range pending {
		if h.queue.get(cl.ID, p.PacketID) != nil {
			known = append(known, p)
		} else {
			fresh = append(fresh, p)
		}
	}
	slices.SortFunc(known, func(a, b packets.Packet) int {
		return cmp.Compare(h.queue.get(cl.ID, a.PacketID).order, h.queue.get(cl.ID, b.PacketID).order)
	})
	for _, p := range inIDOrder(fresh) {
		h.queue.last++
		h.queue.add(cl.ID, p.PacketID, &queuedMsg{order: h.queue.last, created: p.Created})
	}
	// mochi sorts on uint16(Created): orders from a multiple of 65536,
	// in the future so that no expiry takes them for old, and below the
	// low bits of now, so that messages queued meanwhile come after.
	base := (time.Now().Unix()/65536 + 1) * 65536
	for i, p := range append(known, fresh...) {
		m := h.queue.get(cl.ID, p.PacketID)
		if !m.faked {
			m.created, m.faked = p.Created, true
		}
		p.Created = base + int64(i)
		old.State.Inflight.Set(p)
	}
}

// OnSessionEstablished stores the session (mochi's hook) and, once mochi
// has resent the session's messages, gives them back their creation
// times. cl reads nothing before this returns, so no acknowledgement
// removes a message meanwhile.
func (h *persistHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.Hook.OnSessionEstablished(cl, pk)
	if h.queue.n.Load() == 0 {
		return
	}
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	for id, m := range h.queue.msgs[cl.ID] {
		if !m.faked {
			continue
		}
		if p, ok := cl.State.Inflight.Get(id); ok {
			p.Created = m.created
			cl.State.Inflight.Set(p)
		}
		m.faked = false
	}
}

// OnClientExpired deletes an expired session and its messages.
func (h *persistHook) OnClientExpired(cl *mqtt.Client) {
	h.Hook.OnClientExpired(cl)
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	delete(h.queue.settled, cl.ID)
	for id, m := range h.queue.msgs[cl.ID] {
		h.queue.remove(cl.ID, id)
		if m.onDisk {
			h.Hook.OnQosComplete(cl, packets.Packet{PacketID: id})
		}
	}
}

// StoredClients returns the stored sessions without their topic alias
// maximum: no outbound aliases (see OnSessionEstablish).
func (h *persistHook) StoredClients() ([]storage.Client, error) {
	v, err := h.Hook.StoredClients()
	for i := range v {
		v[i].Properties.TopicAliasMaximum = 0
	}
	return v, err
}

// StoredInflightMessages puts the stored messages back into their
// sessions, with their packet ids and expiry, and deletes those of
// sessions that were not kept. It returns none: mochi's own loading would
// give them all packet id 0.
func (h *persistHook) StoredInflightMessages() ([]storage.Message, error) {
	stored, err := h.Hook.StoredInflightMessages()
	if err != nil {
		return nil, err
	}
	h.queue.mu.Lock()
	defer h.queue.mu.Unlock()
	maxExpiry := h.mochi.Options.Capabilities.MaximumMessageExpiryInterval
	for _, sm := range stored {
		id, err := strconv.ParseUint(sm.ID[strings.LastIndexByte(sm.ID, ':')+1:], 10, 16)
		if err != nil {
			continue // not a key this hook wrote
		}
		cl, ok := h.mochi.Clients.Get(sm.Client)
		if !ok {
			h.Hook.OnQosComplete(&mqtt.Client{ID: sm.Client}, packets.Packet{PacketID: uint16(id)})
			continue
		}
		pk := sm.ToPacket()
		pk.PacketID = uint16(id)
		// As mochi sets it when it queues a message; only MQTT 5
		// publishers give an expiry interval.
		if expiry := minimumExpiry(maxExpiry, int64(pk.Properties.MessageExpiryInterval)); expiry > 0 {
			pk.Expiry = pk.Created + expiry
		}
		if pk.Properties.MessageExpiryInterval > 0 {
			pk.ProtocolVersion = 5
		}
		if cl.State.Inflight.Set(pk) {
			atomic.AddInt64(&h.mochi.Info.Inflight, 1)
		}
		h.queue.add(cl.ID, pk.PacketID, &queuedMsg{order: sm.Sent, created: sm.Created, onDisk: true})
		h.queue.last = max(h.queue.last, sm.Sent)
	}
	return nil, nil
}

// minimumExpiry is mochi's: the lesser of a and b, where 0 is no limit.
func minimumExpiry(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// Stop writes what persistent sessions have not acknowledged before the
// file is closed. By now every client was disconnected and its
// OnDisconnect has written them (closeGuard waits for that); this covers
// a client whose OnDisconnect did not run.
func (h *persistHook) Stop() error {
	for _, cl := range h.mochi.Clients.GetAll() {
		if !sessionEnds(cl) && !cl.IsTakenOver() && !cl.Net.Inline {
			h.keepUnacknowledged(cl)
		}
	}
	return h.Hook.Stop()
}

func (q *sessionQueue) get(client string, id uint16) *queuedMsg { return q.msgs[client][id] }

func (q *sessionQueue) add(client string, id uint16, m *queuedMsg) *queuedMsg {
	byID := q.msgs[client]
	if byID == nil {
		byID = map[uint16]*queuedMsg{}
		q.msgs[client] = byID
	}
	if byID[id] == nil {
		q.n.Add(1)
	}
	byID[id] = m
	return m
}

func (q *sessionQueue) remove(client string, id uint16) {
	byID := q.msgs[client]
	if _, ok := byID[id]; !ok {
		return
	}
	delete(byID, id)
	q.n.Add(-1)
	if len(byID) == 0 {
		delete(q.msgs, client)
	}
}
