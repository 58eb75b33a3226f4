package coord

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/internal/ingest"
)

// Who may speak for an agent or a camera. Anyone allowed to publish on an
// agent's or a camera's topics (an admin, an anonymous client on a loopback
// listener) could otherwise forge its reports: point cameras at another
// host with a heartbeat, or end another camera's stream with a "quit".
//
//   - A message on vigil/agents/<id>/{heartbeat,state,segment} counts only
//     if it was published by agent <id>'s client id, logged in with the
//     agent's own credential. The one exception is the agent's last will
//     ("offline" on its state topic): the broker publishes it as the
//     connection closes, and when it closed the connection itself (a kick)
//     the client is no longer connected at that moment. An "offline" state
//     from the agent's client id is therefore also accepted when no client
//     with that id is connected, which is when a will is published.
//   - A heartbeat's addr, where cameras are told to send RTP, must be an IP
//     address and a port on the host the agent's MQTT connection comes
//     from (sameHost); otherwise the agent keeps no address and gets no
//     streams.
//   - A camera's report on vigil/<site>/<camera>/stream counts only for a
//     stream of that site and camera, and, when the camera announced itself
//     (its meta), only from the client id that announced it.
//
// On an external broker (Config.TrustBroker) none of this can be known:
// the broker does not say who published a message. Its ACLs decide who may
// publish on the agents' and cameras' topics (docs/security.md gives them),
// and an agent's addresses need only be IP addresses and ports.
//
// Everything refused is counted in vigil_coordinator_refused_messages_total
// and logged at most once a minute per topic and reason.

// Reasons a report is refused, the label of
// vigil_coordinator_refused_messages_total.
const (
	refusedOtherClient  = "other_client"  // published by another client id than the agent's or the camera's
	refusedOtherLogin   = "other_login"   // the agent's client id, logged in as someone else
	refusedNotConnected = "not_connected" // the agent's client id, not connected, and not its last will
	refusedBadAddr      = "bad_addr"      // an agent's RTP address is not where it connects from
	refusedOtherCamera  = "other_camera"  // a camera's report names another camera's stream
)

// origin is the client that published a message, as the broker saw it
// while the message was being delivered.
type origin struct {
	clientID  string
	login     string // the name it logged in with; "" when anonymous
	connected bool   // false when no client with that id is connected (a will as the connection closes)
	ip        net.IP // where it connects from; nil when not known
}

// originOf asks the broker about a message's publisher. It must run in the
// subscription handler, while the message is being delivered: later the
// client may have gone or been replaced.
func (c *Coordinator) originOf(clientID string) origin {
	login, ok := c.broker.ClientLogin(clientID)
	return origin{clientID: clientID, login: login, connected: ok, ip: net.ParseIP(c.broker.ClientIP(clientID))}
}

// instanceOf is the coordinator instance an agent id starts with
// ("<instance>-<n>").
func instanceOf(id string) string {
	if i := strings.LastIndex(id, "-"); i >= 0 {
		return id[:i]
	}
	return ""
}

// agentUsername is the name of agent id's in-memory credential.
func agentUsername(id string) string { return "agent-" + id }

// fromAgent returns "" if a message on agent id's topic leaf came from the
// agent's own connection, else the reason it is refused.
func fromAgent(id, leaf string, payload []byte, o origin) string {
	switch {
	case o.clientID != ingest.AgentClientID(id):
		return refusedOtherClient
	case !o.connected:
		if leaf == ingest.AgentState && string(payload) == ingest.StateOffline {
			return "" // its last will, published as the broker closed the connection
		}
		return refusedNotConnected
	case o.login != agentUsername(id):
		return refusedOtherLogin
	}
	return ""
}

// checkAgentAddr tells whether cameras may be sent to addr, an agent's RTP
// address: an IP address (not a name, which could resolve anywhere) and a
// port with room for RTCP above it, on the host the agent connects from
// (unless anyHost: on an external broker, where that host is not known).
func checkAgentAddr(addr string, from net.IP, anyHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not host:port: %w", err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65534 {
		return fmt.Errorf("port %q is not 1-65534", port)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("host %q is not an IP address", host)
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("%s is not an address packets can be sent to", ip)
	}
	if anyHost {
		return nil
	}
	if from == nil {
		return fmt.Errorf("the agent's connection address is not known")
	}
	if !sameHost(ip, from) {
		return fmt.Errorf("%s is not the host the agent connects from (%s)", ip, from)
	}
	return nil
}

// refuse counts a refused report and logs it, rate-limited.
func (c *Coordinator) refuse(topic, reason, msg string, args ...any) {
	c.m.refused.WithLabelValues(topic, reason).Inc()
	c.refusals.Warn(topic+"/"+reason, msg, append(args, "topic", topic, "reason", reason)...)
}

// sameHost tells whether an agent that connects to the broker from from
// can be serving at ip: the same address, or, for an agent on this host
// (it connects over loopback or from one of this host's addresses), any of
// this host's addresses.
func sameHost(ip, from net.IP) bool {
	if ip == nil || from == nil {
		return false
	}
	if ip.Equal(from) {
		return true
	}
	return isLocal(from) && isLocal(ip)
}

// isLocal tells whether ip is loopback or one of this host's addresses.
func isLocal(ip net.IP) bool {
	if ip.IsLoopback() {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
