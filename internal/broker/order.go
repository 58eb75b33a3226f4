package broker

import (
	"cmp"
	"runtime"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// orderHook keeps a SUBSCRIBE and a PUBLISH that arrive on different
// connections in the order they arrived, where Go's scheduler would swap
// them: a client that subscribes on one connection and then publishes on
// another (a request and its reply, Eclipse Paho's test_request_response)
// gets its message.
//
// Each connection is read by a goroutine of its own. When several
// connections become readable in one poll of the network, Go runs the
// last of them at once on the polling thread and queues the others for a
// thread that it must wake first, which on an idle machine takes from
// 100 µs to over a millisecond; and a SUBSCRIBE takes longer to process
// than a PUBLISH takes to route. So a message published 100 µs to 1 ms
// after a SUBSCRIBE arrived on another connection went past the new
// subscription, about one time in two. MQTT 5 section 4.6 orders messages
// only per connection, but a single-threaded broker (Mosquitto) takes
// packets in arrival order, and clients count on it.
//
// Before a PUBLISH is routed, its goroutine yields, so that the
// goroutines already runnable (those woken by the same poll among them)
// run first: twice, since one time in 61 Go's scheduler takes from its
// global queue first, where the first yield put this goroutine itself
// (TestPacketsPolledTogetherAreTakenInArrivalOrder missed one message in
// 50 with one yield). And while a SUBSCRIBE that another connection has received
// is not yet in effect, it waits, at most orderWait. The hook is added
// last, after those that may refuse or store the message, just before
// mochi routes it. With no SUBSCRIBE under way, this costs two yields:
// under a microsecond when nothing else is runnable, and about 1 % of the
// broker's CPU at 5,000 devices publishing each second (a profile of
// `vigil bench --target vigil --devices 5000 --subscriber`: 0.22 s of
// 23 s in this hook).
type orderHook struct {
	mqtt.HookBase
	// SUBSCRIBE packets received (checkedConn.check) and not yet in
	// effect (OnSubscribed) or dropped with their connection.
	subscribing atomic.Int64
	wait        time.Duration // the longest a PUBLISH waits for them; 0: orderWait
}

// orderWait bounds the wait of a PUBLISH for SUBSCRIBEs under way on
// other connections. A SUBSCRIBE takes tens of microseconds; the bound is
// for one that mochi refuses without processing it (its connection ends
// then), and for two clients whose PUBLISH each wait behind a SUBSCRIBE
// the other sent after it.
const orderWait = 2 * time.Millisecond

func (*orderHook) ID() string { return "vigil-order" }

func (*orderHook) Provides(b byte) bool { return b == mqtt.OnPublish || b == mqtt.OnSubscribed }

// received counts a SUBSCRIBE that conn has received.
func (h *orderHook) received(conn *checkedConn) {
	conn.subscribing.Add(1)
	h.subscribing.Add(1)
}

// OnSubscribed is called once mochi has added a SUBSCRIBE's filters to
// its topic tree, before it answers the SUBACK.
func (h *orderHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	if conn, ok := cl.Net.Conn.(*checkedConn); ok && conn.subscribing.Add(-1) >= 0 {
		h.subscribing.Add(-1)
	} else if ok {
		conn.subscribing.Add(1) // not one it counted
	}
}

// ended drops what conn received and will never process.
func (h *orderHook) ended(conn *checkedConn) {
	h.subscribing.Add(-conn.subscribing.Swap(0))
}

func (h *orderHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	runtime.Gosched()
	runtime.Gosched()
	// Not for its own SUBSCRIBEs: those come after this PUBLISH on its
	// connection, which is processed in order.
	var own *atomic.Int64
	if conn, ok := cl.Net.Conn.(*checkedConn); ok {
		own = &conn.subscribing
	}
	others := func() bool {
		n := h.subscribing.Load()
		if own != nil {
			n -= own.Load()
		}
		return n > 0
	}
	if others() {
		for deadline := time.Now().Add(cmp.Or(h.wait, orderWait)); others() && time.Now().Before(deadline); {
			runtime.Gosched()
		}
	}
	return pk, nil
}
