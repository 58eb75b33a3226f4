package broker

import (
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// closeGuard wraps a listener to make closing the broker safe while clients
// come and go. mochi v2.7.9 has two bugs there:
//
//   - closing a listener disconnects its clients through
//     Clients.GetByListener, which takes a read lock twice and deadlocks when
//     a client connects or disconnects in between (mochi-mqtt/server#488);
//   - a connection accepted while the server closes calls ClientsWg.Add
//     while Close is in ClientsWg.Wait, a misuse of sync.WaitGroup.
//
// The guard counts the connections it hands to mochi; on Close it refuses
// new ones, tells its clients the server is shutting down (using
// Clients.GetAll, which locks once), closes any connection still in its
// handshake, and waits until mochi is done with every one of them, before
// mochi's own wait begins.
type closeGuard struct {
	listeners.Listener
	s *Server

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newCloseGuard(l listeners.Listener, s *Server) *closeGuard {
	g := &closeGuard{Listener: l, s: s, conns: map[net.Conn]struct{}{}}
	s.guardsMu.Lock()
	s.guards = append(s.guards, g)
	s.guardsMu.Unlock()
	return g
}

// open returns how many connections the guard's listener is handling
// (each leaves once mochi, and a recover of a panic, are done with it).
func (g *closeGuard) open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

func (g *closeGuard) Serve(establish listeners.EstablishFn) {
	g.Listener.Serve(func(id string, c net.Conn) error {
		g.mu.Lock()
		if g.closing {
			g.mu.Unlock()
			return c.Close()
		}
		g.conns[c] = struct{}{}
		g.wg.Add(1)
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			delete(g.conns, c)
			g.mu.Unlock()
			g.wg.Done()
		}()
		// Until its CONNECT, a connection lives at most connectTimeout;
		// mochi then sets the deadline from the client's keep-alive.
		if g.s.connectTimeout > 0 {
			c.SetDeadline(time.Now().Add(g.s.connectTimeout))
		}
		cc := g.s.checkConn(c)
		defer g.s.order.ended(cc) // the SUBSCRIBEs it received and never processed
		// A panic on this connection's goroutine (in mochi's handling of
		// its packets, or in a hook) ends this connection, not the process.
		defer func() {
			if v := recover(); v != nil {
				g.s.recovered(id, cc, v)
			}
		}()
		// How a connection ended is no news (mochi would log it as an
		// untitled warning): refused logins are logged by the auth hook.
		if err := establish(id, cc); err != nil {
			g.s.log.Debug("client connection ended", "listener", id, "remote", c.RemoteAddr().String(), "error", err)
		}
		return nil
	})
}

func (g *closeGuard) Close(listeners.CloseFn) {
	g.mu.Lock()
	g.closing = true
	g.mu.Unlock()
	g.Listener.Close(func(id string) {
		for _, cl := range g.s.mochi.Clients.GetAll() {
			if cl.Net.Listener == id && !cl.Closed() {
				kick(g.s.mochi, cl, packets.ErrServerShuttingDown) // MQTT 3.1.1 has no DISCONNECT from the server
			}
		}
	})
	g.mu.Lock()
	for c := range g.conns {
		c.Close() // those still in their CONNECT handshake
	}
	g.mu.Unlock()
	g.wg.Wait()
}
