package broker

import (
	"errors"
	"fmt"
	"net"
	"runtime/debug"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Where a client's packet was stopped from taking the broker down: the
// label of vigil_mqtt_panics_total.
const (
	panicDecode  = "decode"  // mochi's decoder would have panicked: refused before mochi read it
	panicProcess = "process" // handling a packet panicked: recovered on the connection's goroutine
)

// containment counts and logs the packets that would have crashed the
// broker, and ends only the connection that sent them.
type containment struct {
	panics *prometheus.CounterVec
	stalls prometheus.Counter
}

func newContainment() containment {
	c := containment{
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_mqtt_panics_total",
			Help: "Client packets that would have crashed the broker, by where they were stopped; each ended only its own connection.",
		}, []string{"where"}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_mqtt_write_timeouts_total",
			Help: "Connections closed because the client did not read what the broker wrote within mqtt.write_timeout.",
		}),
	}
	c.panics.WithLabelValues(panicDecode) // every series from the start
	c.panics.WithLabelValues(panicProcess)
	return c
}

// checkConn wraps a new connection so that a packet that would panic
// mochi's decoder ends that connection instead (see checkedConn).
func (s *Server) checkConn(c net.Conn) *checkedConn {
	cc := newCheckedConn(c, s.maxPacket, func(t byte, v any, at string) {
		s.contain.panics.WithLabelValues(panicDecode).Inc()
		s.rlog.Warn(panicDecode, "mqtt client sent a malformed packet that would crash the decoder; connection closed",
			"remote", c.RemoteAddr().String(), "packet", packetName(t), "panic", fmt.Sprint(v), "at", at)
	})
	cc.writeTimeout, cc.order = s.writeTimeout, s.order
	cc.onStall = func() {
		s.contain.stalls.Inc()
		s.rlog.Warn("write-timeout", "mqtt client stopped reading; connection closed (mqtt.write_timeout)",
			"remote", c.RemoteAddr().String(), "timeout", s.writeTimeout.String())
	}
	return cc
}

// recovered ends a connection whose handling panicked (after the decoder:
// in mochi or in a hook) and removes what mochi had registered for it,
// as mochi does for a connection that ends with an error: the client
// leaves the hooks' maps, and a session that ends with the connection
// loses its subscriptions, in-flight messages and registry entry. Its
// last will is not published: the connection broke the broker, not the
// network.
func (s *Server) recovered(listener string, conn net.Conn, v any) {
	s.contain.panics.WithLabelValues(panicProcess).Inc()
	s.rlog.Warn(panicProcess, "mqtt client's packet crashed the broker's handling of it; connection closed",
		"listener", listener, "remote", conn.RemoteAddr().String(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	conn.Close()
	var cl *mqtt.Client
	for _, c := range s.mochi.Clients.GetAll() {
		if c.Net.Conn == conn {
			cl = c
			break
		}
	}
	if cl == nil {
		return // it ended before mochi registered it; the hooks sweep closed clients
	}
	err := errors.New("packet handling panicked")
	cl.Stop(err)
	if expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean); expire && !cl.IsTakenOver() {
		s.expireSession(cl, err)
		return
	}
	for _, h := range s.hooks {
		s.disconnected(h, cl, err, false)
	}
}

// disconnected tells hook h that cl's connection ended, containing a panic
// in it (this runs where a panic was just recovered).
func (s *Server) disconnected(h mqtt.Hook, cl *mqtt.Client, err error, expire bool) {
	defer func() {
		if v := recover(); v != nil {
			s.contain.panics.WithLabelValues(panicProcess).Inc()
			s.rlog.Warn("hook-panic", "a broker hook panicked while a client was leaving", "hook", h.ID(), "client_id", cl.ID, "panic", fmt.Sprint(v))
		}
	}()
	h.OnDisconnect(cl, err, expire)
}
