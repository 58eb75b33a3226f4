package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// closeGuard wraps a listener so that closing it disconnects its clients
// without mochi's Clients.GetByListener, which takes a read lock twice and
// deadlocks the broker when a client connects or disconnects at that moment
// (mochi-mqtt/server#488, unfixed in v2.7.9; Vigil hit it in its shutdown
// test). Clients.GetAll takes the lock once.
type closeGuard struct {
	listeners.Listener
	srv *mqtt.Server
}

func (g closeGuard) Close(listeners.CloseFn) {
	g.Listener.Close(func(id string) {
		for _, cl := range g.srv.Clients.GetAll() {
			if cl.Net.Listener == id && !cl.Closed() {
				_ = g.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
}
