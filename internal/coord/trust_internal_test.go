package coord

import (
	"net"
	"testing"

	"github.com/vigilhq/vigil/internal/ingest"
)

func TestOnlyTheAgentsOwnConnectionSpeaksForIt(t *testing.T) {
	own := ingest.AgentClientID("x-1")
	for _, c := range []struct {
		name          string
		leaf, payload string
		o             origin
		want          string
	}{
		{"its heartbeat from its own connection counts", "heartbeat", "{}", origin{clientID: own, login: "agent-x-1", connected: true}, ""},
		{"its offline from its own connection counts", "state", ingest.StateOffline, origin{clientID: own, login: "agent-x-1", connected: true}, ""},
		{"its last will as the broker closed its connection counts", "state", ingest.StateOffline, origin{clientID: own}, ""},
		{"another client's heartbeat is refused", "heartbeat", "{}", origin{clientID: "forger", connected: true}, refusedOtherClient},
		{"an admin's segment report is refused", "segment", "{}", origin{clientID: "laptop", login: "admin", connected: true}, refusedOtherClient},
		{"its client id logged in as someone else is refused", "heartbeat", "{}", origin{clientID: own, login: "admin", connected: true}, refusedOtherLogin},
		{"its client id logged in anonymously is refused", "state", ingest.StateOffline, origin{clientID: own, connected: true}, refusedOtherLogin},
		{"another agent's login is refused", "state", ingest.StateFull, origin{clientID: own, login: "agent-x-2", connected: true}, refusedOtherLogin},
		{"anything but offline from its client id when it is not connected is refused", "state", ingest.StateEmpty, origin{clientID: own}, refusedNotConnected},
		{"a heartbeat from its client id when it is not connected is refused", "heartbeat", "{}", origin{clientID: own}, refusedNotConnected},
		{"another client's will is refused", "state", ingest.StateOffline, origin{clientID: "forger"}, refusedOtherClient},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := fromAgent("x-1", c.leaf, []byte(c.payload), c.o); got != c.want {
				t.Errorf("fromAgent = %q, want %q", got, c.want)
			}
		})
	}
}

func TestAnAgentsAddressMustBeWhereItConnectsFrom(t *testing.T) {
	loop := net.ParseIP("127.0.0.1")
	ctr := net.ParseIP("172.18.0.5")
	for _, c := range []struct {
		name    string
		addr    string
		from    net.IP
		anyHost bool // an external broker: where the agent connects from is not known
		ok      bool
	}{
		{"loopback from a local agent is fine", "127.0.0.1:40000", loop, false, true},
		{"IPv6 loopback from a local agent is fine", "[::1]:40000", loop, false, true},
		{"a container's own address is fine", "172.18.0.5:20000", ctr, false, true},
		{"another host is refused", "203.0.113.7:5004", loop, false, false},
		{"another container is refused", "172.18.0.6:20000", ctr, false, false},
		{"this host's loopback from a container is refused", "127.0.0.1:20000", ctr, false, false},
		{"a host name is refused", "localhost:40000", loop, false, false},
		{"the unspecified address is refused", "0.0.0.0:40000", loop, false, false},
		{"a missing port is refused", "127.0.0.1", loop, false, false},
		{"port 0 is refused", "127.0.0.1:0", loop, false, false},
		{"port 65535 leaves no room for RTCP", "127.0.0.1:65535", loop, false, false},
		{"a port that is not a number is refused", "127.0.0.1:rtp", loop, false, false},
		{"an unknown connection address is refused", "127.0.0.1:40000", nil, false, false},
		{"on an external broker any host's IP is taken", "203.0.113.7:5004", nil, true, true},
		{"on an external broker a host name is still refused", "cams.example:5004", nil, true, false},
		{"on an external broker the unspecified address is still refused", "0.0.0.0:40000", nil, true, false},
		{"on an external broker a multicast address is refused", "239.1.1.1:5004", nil, true, false},
		{"on an external broker port 65535 is still refused", "203.0.113.7:65535", nil, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := checkAgentAddr(c.addr, c.from, c.anyHost); (err == nil) != c.ok {
				t.Errorf("checkAgentAddr(%q, %v) = %v, want ok=%v", c.addr, c.from, err, c.ok)
			}
		})
	}
}
