package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ratelog"
)

// Which quota a client ran into: the label of
// vigil_mqtt_quota_exceeded_total.
const (
	quotaRetainedMessages = "retained_messages"
	quotaRetainedBytes    = "retained_bytes"
	quotaSubscriptions    = "subscriptions"
)

// quotaHook bounds what clients can make the broker hold: the retained
// messages of each login (a username; all anonymous clients together are
// one login), by count and by bytes, and the subscriptions of each login's
// sessions together. Vigil's own clients (the in-process client, the
// internal login, agents' credentials) have no quota.
//
// A retained message belongs to the login of its last publisher: replacing
// it moves it to the new publisher, clearing it (an empty retained
// payload) or its expiry frees its owner's share. Ownership follows what
// mochi actually holds: each change is checked against mochi's retained
// store under mu, so two clients racing on one topic cannot leave a
// message charged to the one whose message lost.
//
// A subscription belongs to its session: mochi keeps subscriptions by
// client id, for as long as the session lasts, connected or persistent
// and offline, and so does the hook. A new filter costs one; subscribing
// again to a filter the session holds costs nothing; unsubscribing, and
// the session's end (a clean disconnect, its expiry, a takeover with a
// clean start, revocation), give its filters back. A session taken over
// by a new connection that resumes it keeps them.
//
// Only retained messages and SUBSCRIBE packets cost anything: for any
// other PUBLISH the hook looks at the retain flag and returns. mu is taken
// only on those paths (mochi's retained store has one lock for everyone
// too); subMu on SUBSCRIBE, UNSUBSCRIBE and a session's end.
type quotaHook struct {
	mqtt.HookBase
	auth  *authHook
	mochi *mqtt.Server
	log   *slog.Logger
	rlog  *ratelog.Logger

	login, anonymous limit // retained messages per login; all anonymous clients together

	// subscriptions per login, and for all anonymous clients together
	maxSubscriptions, anonymousMaxSubscriptions int

	// clients are the connected clients that have quotas (not Vigil's
	// own), from OnSessionEstablished to OnDisconnect.
	clients sync.Map // *mqtt.Client -> *quotaClient

	mu     sync.Mutex
	owners map[string]owned    // topic -> who holds its retained message
	logins map[string]*holding // login -> what it holds; absent when nothing
	total  atomic.Int64        // bytes of every retained message accounted, quota or not

	subMu     sync.Mutex
	sessions  map[string]*subSession // client id -> what its session holds; absent when nothing
	subLogins map[string]*subHolding // login -> what its sessions hold; absent when nothing

	exceeded *prometheus.CounterVec
}

// limit is a quota on retained messages.
type limit struct{ messages, bytes int64 }

// owned is one retained message's owner and size.
type owned struct {
	login   string
	counted bool // against login's quota: false for Vigil's own, and for restored messages of unknown owner
	size    int64
}

// holding is what a login holds, and what its clients are about to store
// (reserved when a retained PUBLISH is accepted, settled when mochi has
// retained it), so that many clients of one login publishing at once
// cannot overshoot its quota together.
type holding struct {
	messages, bytes               int64
	pendingMessages, pendingBytes int64
}

func (hd *holding) empty() bool {
	return hd.messages == 0 && hd.bytes == 0 && hd.pendingMessages == 0 && hd.pendingBytes == 0
}

// subSession is what one session (a client id) holds: the filters mochi
// subscribed it to, charged to login.
type subSession struct {
	login   string
	filters map[string]struct{}
}

func (s *subSession) holds(filter string) bool {
	if s == nil {
		return false
	}
	_, ok := s.filters[filter]
	return ok
}

// subHolding is how many subscriptions the sessions of a login hold, and
// how many its clients are about to add (reserved when a SUBSCRIBE's
// filter is accepted, settled when mochi has answered it), so that many
// clients of one login subscribing at once cannot overshoot its quota
// together.
type subHolding struct{ held, pending int }

// quotaClient is a connected client with quotas.
type quotaClient struct {
	login string

	// reserved is the size of the retained message this client is
	// storing (its PUBLISH or will was accepted, mochi has not retained it
	// yet); -1 when none. Guarded by quotaHook.mu.
	reserved int64

	// adding are the indexes of the filters of the SUBSCRIBE being
	// handled that took room in the login's quota, until mochi has
	// answered them. Guarded by quotaHook.subMu.
	adding []int

	// refused are the indexes of the filters of the SUBSCRIBE being
	// handled that are beyond the quota; only the client's goroutine uses
	// it, between OnSubscribe and OnSubscribed.
	refused []int
}

func newQuotaHook(c conf.MQTT, m *mqtt.Server, auth *authHook, log *slog.Logger, rlog *ratelog.Logger) *quotaHook {
	h := &quotaHook{
		auth: auth, mochi: m, log: log.With("part", "quota"), rlog: rlog,
		login:                     limit{int64(c.MaxRetainedMessages), int64(c.MaxRetainedBytes)},
		anonymous:                 limit{int64(c.AnonymousMaxRetainedMessages), int64(c.AnonymousMaxRetainedBytes)},
		maxSubscriptions:          c.MaxSubscriptions,
		anonymousMaxSubscriptions: c.AnonymousMaxSubscriptions,
		owners:                    map[string]owned{},
		logins:                    map[string]*holding{},
		sessions:                  map[string]*subSession{},
		subLogins:                 map[string]*subHolding{},
		exceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_mqtt_quota_exceeded_total",
			Help: "Retained messages and subscriptions refused because their login was at its quota, by quota.",
		}, []string{"quota"}),
	}
	for _, q := range []string{quotaRetainedMessages, quotaRetainedBytes, quotaSubscriptions} {
		h.exceeded.WithLabelValues(q) // shown at 0 before the first refusal
	}
	return h
}

func (h *quotaHook) ID() string { return "vigil-quota" }

// Provides is asked for every hook on every packet: a switch.
func (h *quotaHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnPublish, mqtt.OnWill, mqtt.OnRetainMessage,
		mqtt.OnRetainedExpired, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnClientExpired:
		return true
	}
	return false
}

func (h *quotaHook) collectors() []prometheus.Collector {
	return []prometheus.Collector{h.exceeded, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vigil_mqtt_retained_bytes",
		Help: "Bytes of retained messages held (topics, payloads and properties; $SYS topics aside).",
	}, func() float64 { return float64(h.total.Load()) })}
}

// owner returns the login a client's retained messages belong to, and
// whether they count against its quota (not for Vigil's own clients). It
// also holds for a client that has disconnected (a delayed will).
func (h *quotaHook) owner(cl *mqtt.Client) (login string, counted bool) {
	login = string(cl.Properties.Username)
	if cl.Net.Inline || h.auth.isOwn(cl) || login == internalUser {
		return login, false
	}
	if _, ok := h.auth.creds.Load(login); ok {
		return login, false
	}
	return login, true
}

func (h *quotaHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if login, counted := h.owner(cl); counted {
		h.clients.Store(cl, &quotaClient{login: login, reserved: -1})
	}
}

func (h *quotaHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if v, ok := h.clients.LoadAndDelete(cl); ok {
		q := v.(*quotaClient)
		h.mu.Lock()
		h.settle(q)
		h.mu.Unlock()
		h.subMu.Lock()
		h.settleSubscriptions(cl.ID, q, nil, nil) // only if its SUBSCRIBE's handling broke off
		h.subMu.Unlock()
	}
}

// limitOf returns the quota of a login.
func (h *quotaHook) limitOf(login string) limit {
	if login == "" {
		return h.anonymous
	}
	return h.login
}

// retainedSize is what a retained message counts against its owner:
// its topic, payload and the properties kept with it.
func retainedSize(topic string, payload []byte, p *packets.Properties) int64 {
	n := len(topic) + len(payload) + len(p.ContentType) + len(p.ResponseTopic) + len(p.CorrelationData)
	for _, u := range p.User {
		n += len(u.Key) + len(u.Val)
	}
	return int64(n)
}

// reserve makes room for a retained message of size on topic from q's
// login, or returns the quota it would exceed and what the login holds.
// Replacing one of the login's own messages counts only the difference.
func (h *quotaHook) reserve(q *quotaClient, topic string, size int64) (exceeded string, held holding) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.settle(q) // a reservation left over (its message was never retained)
	hd := h.logins[q.login]
	if hd == nil {
		hd = &holding{}
	}
	messages, bytes := hd.messages+hd.pendingMessages+1, hd.bytes+hd.pendingBytes+size
	if o, ok := h.owners[topic]; ok && o.counted && o.login == q.login {
		messages, bytes = messages-1, bytes-o.size
	}
	lim := h.limitOf(q.login)
	switch {
	case messages > lim.messages:
		return quotaRetainedMessages, *hd
	case bytes > lim.bytes:
		return quotaRetainedBytes, *hd
	}
	hd.pendingMessages++
	hd.pendingBytes += size
	h.logins[q.login] = hd
	q.reserved = size
	return "", holding{}
}

// settle ends q's reservation, if any. h.mu is held.
func (h *quotaHook) settle(q *quotaClient) {
	if q.reserved < 0 {
		return
	}
	if hd := h.logins[q.login]; hd != nil {
		hd.pendingMessages--
		hd.pendingBytes -= q.reserved
		if hd.empty() {
			delete(h.logins, q.login)
		}
	}
	q.reserved = -1
}

// set records o as the owner of topic's retained message, freeing the
// previous owner's share. h.mu is held.
func (h *quotaHook) set(topic string, o owned) {
	h.drop(topic)
	h.owners[topic] = o
	h.total.Add(o.size)
	if o.counted {
		hd := h.logins[o.login]
		if hd == nil {
			hd = &holding{}
			h.logins[o.login] = hd
		}
		hd.messages++
		hd.bytes += o.size
	}
}

// drop forgets topic's retained message and frees its owner's share.
// h.mu is held.
func (h *quotaHook) drop(topic string) {
	o, ok := h.owners[topic]
	if !ok {
		return
	}
	delete(h.owners, topic)
	h.total.Add(-o.size)
	if !o.counted {
		return
	}
	if hd := h.logins[o.login]; hd != nil {
		hd.messages--
		hd.bytes -= o.size
		if hd.empty() {
			delete(h.logins, o.login)
		}
	}
}

// OnPublish refuses a retained message beyond its login's quota. MQTT 5
// publishers at QoS 1 and 2 are told "quota exceeded" (0x97) in their
// PUBACK or PUBREC, and the message goes nowhere. At QoS 0, which has no
// answer, the message is delivered as a normal, not retained, message.
// MQTT 3.1.1 publishers at QoS 1 and 2, which have no refusal but a
// disconnection, are disconnected: acknowledging would promise a
// retained message that is not kept.
func (h *quotaHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || len(pk.Payload) == 0 {
		return pk, nil // not retained, or clearing (which frees quota)
	}
	v, ok := h.clients.Load(cl)
	if !ok {
		return pk, nil // Vigil's own
	}
	q := v.(*quotaClient)
	exceeded, held := h.reserve(q, pk.TopicName, retainedSize(pk.TopicName, pk.Payload, &pk.Properties))
	if exceeded == "" {
		return pk, nil
	}
	h.exceeded.WithLabelValues(exceeded).Inc()
	answer := "delivered, not retained"
	var err error
	switch {
	case pk.FixedHeader.Qos == 0:
		pk.FixedHeader.Retain = false
	default:
		answer, err = refusePublish(cl, pk, packets.ErrQuotaExceeded), packets.ErrRejectPacket
	}
	h.logRefused(cl, q.login, pk.TopicName, exceeded, answer, held)
	return pk, err
}

// OnWill keeps a retained last will within its login's quota: beyond it,
// the will is published but not retained.
func (h *quotaHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if !will.Retain || len(will.Payload) == 0 {
		return will, nil
	}
	v, ok := h.clients.Load(cl)
	if !ok {
		return will, nil
	}
	q := v.(*quotaClient)
	p := packets.Properties{User: will.User}
	exceeded, held := h.reserve(q, will.TopicName, retainedSize(will.TopicName, will.Payload, &p))
	if exceeded == "" {
		return will, nil
	}
	h.exceeded.WithLabelValues(exceeded).Inc()
	will.Retain = false
	h.logRefused(cl, q.login, will.TopicName, exceeded, "last will delivered, not retained", held)
	return will, nil
}

// logRefused logs a refused retained message, at most once a minute.
func (h *quotaHook) logRefused(cl *mqtt.Client, login, topic, exceeded, answer string, held holding) {
	lim := h.limitOf(login)
	h.rlog.Warn("retained-quota", "mqtt retained message refused: its login is at its quota", "client_id", cl.ID,
		"username", login, "remote", cl.Net.Remote, "topic", topic, "quota", exceeded, "answer", answer,
		"held_messages", held.messages, "held_bytes", held.bytes, "max_messages", lim.messages, "max_bytes", lim.bytes)
}

// OnRetainMessage records who holds topic's retained message now, after
// mochi has stored (or cleared) it.
func (h *quotaHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, _ int64) {
	login, counted := h.owner(cl)
	var q *quotaClient
	if v, ok := h.clients.Load(cl); ok {
		q = v.(*quotaClient)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if q != nil {
		h.settle(q)
	}
	// Another client may have replaced or cleared the message since
	// mochi stored this one; then that client's call records it.
	cur, ok := h.mochi.Topics.Retained.Get(pk.TopicName)
	switch {
	case ok && cur.Origin == pk.Origin && cur.Created == pk.Created && bytes.Equal(cur.Payload, pk.Payload):
		h.set(pk.TopicName, owned{login: login, counted: counted, size: retainedSize(pk.TopicName, pk.Payload, &pk.Properties)})
	case !ok && len(pk.Payload) == 0:
		h.drop(pk.TopicName)
	}
}

// OnRetainedExpired frees the share of a retained message mochi let
// expire.
func (h *quotaHook) OnRetainedExpired(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.mochi.Topics.Retained.Get(topic); !ok {
		h.drop(topic)
	}
}

// Owners of retained messages as broker.bolt keeps them, in the record's
// client field (see persistHook.OnRetainMessage). A record without either
// prefix was written before Vigil kept owners: it holds the publisher's
// client id.
const (
	ownerTagOwn   = "\x00own"
	ownerTagLogin = "\x00login:"
)

// ownerTag is what broker.bolt keeps as the owner of a retained message
// from cl.
func (h *quotaHook) ownerTag(cl *mqtt.Client) string {
	login, counted := h.owner(cl)
	if !counted {
		return ownerTagOwn
	}
	return ownerTagLogin + login
}

// restore accounts what broker.bolt held, before any client connects:
// the retained messages read from it, before mochi holds them, and the
// subscriptions of the persistent sessions mochi restored (it reads
// sessions and their subscriptions before retained messages). A message
// stored before Vigil kept owners belongs to the login of the persistent
// session with its publisher's client id, if there is one; otherwise it
// is counted against nobody until someone replaces or clears it.
func (h *quotaHook) restore(msgs []storage.Message) {
	h.restoreSubscriptions()
	h.mu.Lock()
	defer h.mu.Unlock()
	var unknown int
	for _, m := range msgs {
		if len(m.Payload) == 0 {
			continue
		}
		p := packets.Properties{ContentType: m.Properties.ContentType, ResponseTopic: m.Properties.ResponseTopic,
			CorrelationData: m.Properties.CorrelationData, User: m.Properties.User}
		o := owned{size: retainedSize(m.TopicName, m.Payload, &p)}
		switch {
		case m.Client == ownerTagOwn:
		case strings.HasPrefix(m.Client, ownerTagLogin):
			o.login, o.counted = strings.TrimPrefix(m.Client, ownerTagLogin), true
		default:
			if cl, ok := h.mochi.Clients.Get(m.Origin); ok && !cl.Net.Inline {
				o.login, o.counted = h.owner(cl)
			} else {
				unknown++
			}
		}
		h.set(m.TopicName, o)
	}
	if len(msgs) > 0 {
		h.log.Info("mqtt retained messages restored", "messages", len(h.owners), "bytes", h.total.Load(),
			"logins", len(h.logins), "owner_unknown", unknown)
	}
}

// restoreSubscriptions charges the subscriptions of the sessions mochi
// restored from broker.bolt to their logins.
func (h *quotaHook) restoreSubscriptions() {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	n := 0
	for _, cl := range h.mochi.Clients.GetAll() {
		login, counted := h.owner(cl)
		if cl.Net.Inline || !counted {
			continue
		}
		for filter := range cl.State.Subscriptions.GetAll() {
			h.hold(cl.ID, login, filter)
			n++
		}
	}
	if n > 0 {
		h.log.Info("mqtt subscriptions of persistent sessions restored", "subscriptions", n,
			"sessions", len(h.sessions), "logins", len(h.subLogins))
	}
}

// subLimit returns the subscription quota of a login.
func (h *quotaHook) subLimit(login string) int {
	if login == "" {
		return h.anonymousMaxSubscriptions
	}
	return h.maxSubscriptions
}

// subHoldingOf returns what login's sessions hold, made if need be.
// h.subMu is held.
func (h *quotaHook) subHoldingOf(login string) *subHolding {
	hd := h.subLogins[login]
	if hd == nil {
		hd = &subHolding{}
		h.subLogins[login] = hd
	}
	return hd
}

// addHeld adds n (or, negative, takes -n) to what login's sessions hold.
// h.subMu is held.
func (h *quotaHook) addHeld(login string, n int) {
	hd := h.subHoldingOf(login)
	hd.held += n
	if hd.held == 0 && hd.pending == 0 {
		delete(h.subLogins, login)
	}
}

// hold records that session id holds filter, charged to login (a
// session's subscriptions are all one login's: another login cannot take
// a client id over, see authHook.clientIDRefused). h.subMu is held.
func (h *quotaHook) hold(id, login, filter string) {
	s := h.sessions[id]
	if s == nil {
		s = &subSession{login: login, filters: map[string]struct{}{}}
		h.sessions[id] = s
	}
	if _, ok := s.filters[filter]; ok {
		return
	}
	s.filters[filter] = struct{}{}
	h.addHeld(s.login, 1)
}

// settleSubscriptions ends q's reservations for the SUBSCRIBE of session
// id: the filters mochi granted (a code below 0x80; codes nil: none) are
// held now. h.subMu is held.
func (h *quotaHook) settleSubscriptions(id string, q *quotaClient, filters packets.Subscriptions, codes []byte) {
	if len(q.adding) == 0 {
		return
	}
	h.subHoldingOf(q.login).pending -= len(q.adding)
	for _, i := range q.adding {
		if i < len(codes) && i < len(filters) && codes[i] < packets.ErrUnspecifiedError.Code {
			h.hold(id, q.login, filters[i].Filter)
		}
	}
	q.adding = nil
	h.addHeld(q.login, 0) // forgets a login that holds nothing
}

// OnSubscribe marks the filters of a SUBSCRIBE that would take the
// client's login beyond its quota of subscriptions: they are replaced by
// an empty filter, which mochi refuses without subscribing, and
// OnSubscribed answers them "quota exceeded". Filters the session already
// holds (a new SUBSCRIBE replaces them) and filters mochi refuses anyway
// (invalid, not allowed) take no room. The room the others take is
// reserved at once, under subMu, so that the login's other clients see it.
func (h *quotaHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	v, ok := h.clients.Load(cl)
	if !ok {
		return pk
	}
	q := v.(*quotaClient)
	q.refused = nil
	var room []int // the filters mochi will subscribe
	for i, sub := range pk.Filters {
		if mqtt.IsValidFilter(sub.Filter, false) && !(sub.NoLocal && mqtt.IsSharedFilter(sub.Filter)) &&
			h.auth.OnACLCheck(cl, sub.Filter, false) {
			room = append(room, i)
		}
	}
	if len(room) == 0 {
		return pk
	}
	quota := h.subLimit(q.login)
	h.subMu.Lock()
	s, hd := h.sessions[cl.ID], h.subHoldingOf(q.login)
	var added map[string]bool
	for _, i := range room {
		f := pk.Filters[i].Filter
		if s.holds(f) || added[f] {
			continue
		}
		if hd.held+hd.pending >= quota {
			q.refused = append(q.refused, i)
			continue
		}
		if added == nil {
			added = map[string]bool{}
		}
		added[f] = true
		hd.pending++
		q.adding = append(q.adding, i)
	}
	held := hd.held + hd.pending
	h.addHeld(q.login, 0)
	h.subMu.Unlock()
	if len(q.refused) == 0 {
		return pk
	}
	pk.Filters = append(packets.Subscriptions(nil), pk.Filters...)
	for _, i := range q.refused {
		pk.Filters[i].Filter = ""
	}
	h.exceeded.WithLabelValues(quotaSubscriptions).Add(float64(len(q.refused)))
	h.rlog.Warn("subscription-quota", "mqtt subscriptions refused: the login is at its quota", "client_id", cl.ID,
		"username", q.login, "remote", cl.Net.Remote, "held", held, "refused", len(q.refused), "max", quota)
	return pk
}

// OnSubscribed settles the room OnSubscribe reserved: the filters mochi
// granted are the session's now. And it answers the filters OnSubscribe
// marked "quota exceeded" (0x97) in the SUBACK mochi is about to send;
// MQTT 3.1.1 has only "failure" (0x80), which mochi has already put there.
func (h *quotaHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	v, ok := h.clients.Load(cl)
	if !ok {
		return
	}
	q := v.(*quotaClient)
	if cl.Properties.ProtocolVersion >= 5 {
		for _, i := range q.refused {
			if i < len(reasonCodes) && reasonCodes[i] == packets.ErrTopicFilterInvalid.Code {
				reasonCodes[i] = packets.ErrQuotaExceeded.Code
			}
		}
	}
	q.refused = nil
	h.subMu.Lock()
	h.settleSubscriptions(cl.ID, q, pk.Filters, reasonCodes)
	h.subMu.Unlock()
}

// OnUnsubscribed gives back the room of the filters a session no longer
// holds: those of an UNSUBSCRIBE, or all of them when the session ends
// (mochi's UnsubscribeClient: a clean disconnect, a takeover with a clean
// start, revocation, expiry).
func (h *quotaHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || len(pk.Filters) == 0 {
		return
	}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	s := h.sessions[cl.ID]
	if s == nil {
		return
	}
	n := 0
	for _, sub := range pk.Filters {
		if _, ok := s.filters[sub.Filter]; ok {
			delete(s.filters, sub.Filter)
			n++
		}
	}
	if len(s.filters) == 0 {
		delete(h.sessions, cl.ID)
	}
	h.addHeld(s.login, -n)
}

// OnClientExpired ends the session of a client that stayed away longer
// than its session expiry (a persistent session: up to a week). mochi
// v2.7.9 forgets such a client but leaves its subscriptions in its topic
// index and in broker.bolt, where they would cost memory for ever, come
// back at every start and be delivered to the next client with that id;
// Vigil unsubscribes it as mochi does when a clean session ends, which
// also gives its login's quota back.
func (h *quotaHook) OnClientExpired(cl *mqtt.Client) {
	if cl.Net.Inline || cl.IsTakenOver() {
		return
	}
	if cur, ok := h.mochi.Clients.Get(cl.ID); ok && cur != cl {
		return // a new session has the id
	}
	h.mochi.UnsubscribeClient(cl)
}
