package broker

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// guardHook enforces the guard's blocks on CONNECT and measures each
// client's PUBLISH rate.
//
// The rate is counted in OnPacketRead, on the client's own read goroutine
// and before ACL checks (a flood of refused messages is still a flood), in
// a meter that only that goroutine touches: the cost per message is a
// sync.Map lookup, a clock reading and a few additions, with no lock shared
// between clients. Vigil's in-process client never passes through
// OnPacketRead, and Vigil's own logins get no meter.
type guardHook struct {
	mqtt.HookBase
	g      *guard
	meters sync.Map // *mqtt.Client -> *meter
}

// meter is a client's PUBLISH count; only its client's goroutine uses it.
type meter struct {
	w   window
	off bool // a flood from an exempt address was reported: stop counting
}

func (h *guardHook) ID() string { return "vigil-block" }

func (h *guardHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnDisconnect:
		return true
	case mqtt.OnSessionEstablished, mqtt.OnPacketRead:
		return h.g.floodLimit > 0
	}
	return false
}

// OnConnect refuses a client whose address or client id is blocked, unless
// it logs in as Vigil itself. It runs before authentication, so a blocked
// address costs no bcrypt work.
func (h *guardHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b, ok := h.g.blocked(cl)
	if !ok || h.g.auth.ownLogin(pk) {
		return nil
	}
	h.g.blockedConnects.Inc()
	h.g.log.Debug("connect refused: blocked", "kind", b.Kind, "key", b.Key, "reason", b.Reason,
		"remote", cl.Net.Remote, "client_id", cl.ID, "until", b.Until)
	// MQTT 5 has "banned" (0x8A). 3.1.1 has no such code: mochi maps "bad
	// user name or password" to its "not authorised" (5).
	code := packets.ErrBanned
	if cl.Properties.ProtocolVersion < 5 {
		code = packets.ErrBadUsernameOrPassword
	}
	_ = h.g.mochi.SendConnack(cl, code, false, nil)
	return packets.ErrBanned // mochi sends nothing more and closes the connection
}

func (h *guardHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline || h.g.auth.isOwn(cl) {
		return
	}
	h.meters.Store(cl, &meter{w: newWindow(int64(floodWindow))})
}

// OnPacketRead counts PUBLISH packets; a client over the limit is
// disconnected and blocked, and the packet dropped.
func (h *guardHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish {
		return pk, nil
	}
	v, ok := h.meters.Load(cl)
	if !ok {
		return pk, nil
	}
	m := v.(*meter)
	if m.off {
		return pk, nil
	}
	now := h.g.now()
	m.w.add(now)
	over, n := m.w.over(now, h.g.floodLimit)
	if !over {
		return pk, nil
	}
	if !h.g.flooded(cl, n) {
		m.off = true // exempt: reported once per connection
		return pk, nil
	}
	return pk, packets.ErrRejectPacket
}

func (h *guardHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.meters.Delete(cl)
}
