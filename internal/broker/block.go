package broker

import (
	"cmp"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/conf"
)

// Block kinds.
const (
	// KindAddress blocks a remote address (an IPv4 address, or an IPv6 /64).
	KindAddress = "address"
	// KindClient blocks an MQTT client id.
	KindClient = "client"
)

// Block reasons.
const (
	// ReasonAuthFailures: mqtt.block_auth_failures failed logins from one
	// address within mqtt.block_window.
	ReasonAuthFailures = "auth_failures"
	// ReasonFlood: a client published faster than mqtt.block_flood_messages
	// a second.
	ReasonFlood = "flood"
)

// floodWindow is the sliding window over which a client's PUBLISH rate is
// measured: long enough that a short burst does not count as a flood, short
// enough that a real one is stopped within seconds.
const floodWindow = 3 * time.Second

// maxTracked bounds the addresses whose failed logins are counted at once.
// An attacker with more addresses than this is not stopped by blocking
// addresses anyway; beyond it, new addresses are not counted until old
// counts expire.
const maxTracked = 1 << 16

// Block is a response action in force: the broker refuses CONNECTs from an
// address or with a client id until Until.
type Block struct {
	Kind   string    `json:"kind"`   // KindAddress or KindClient
	Key    string    `json:"key"`    // the address (IPv4, or an IPv6 /64 prefix) or the client id
	Reason string    `json:"reason"` // ReasonAuthFailures or ReasonFlood
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
	// Count is the failed logins within mqtt.block_window, or the messages
	// published within the flood window (3 s), that caused the block;
	// WindowS is that window in seconds.
	Count   int64   `json:"count"`
	WindowS float64 `json:"window_s"`
	// Address, ClientID and Username describe the connection that caused
	// the block (for a failed login: the last one tried; never a password).
	Address  string `json:"address"`
	ClientID string `json:"client_id"`
	Username string `json:"username,omitempty"`
}

// blockKey names a block: an address, or a client id together with the
// username it was used with (a flood blocks that login's use of the id,
// never another user's).
type blockKey struct{ kind, key, user string }

// guard keeps the blocks and the counts that lead to them. Its hook
// (guardHook) enforces them; the auth hook reports failed logins to it.
type guard struct {
	authLimit  int64         // failures that block; 0: off
	authWindow int64         // nanoseconds
	floodLimit int64         // messages within floodWindow that are a flood; 0: off
	duration   time.Duration // of a block
	exempt     []netip.Prefix

	mochi   *mqtt.Server
	auth    *authHook
	log     *slog.Logger
	epoch   time.Time
	onBlock atomic.Pointer[func(Block)]

	active    atomic.Int64 // len(blocks): lets OnConnect skip the lock when nothing is blocked
	mu        sync.Mutex
	blocks    map[blockKey]*Block
	failures  map[string]*window // address key -> failed logins
	lastSweep int64

	blocksTotal     *prometheus.CounterVec
	blockedConnects prometheus.Counter
	authFailures    prometheus.Counter
	exempted        *prometheus.CounterVec
}

func newGuard(c conf.MQTT, m *mqtt.Server, auth *authHook, log *slog.Logger) *guard {
	g := &guard{
		authLimit:  int64(c.BlockAuthFailures),
		authWindow: int64(c.BlockWindow),
		floodLimit: int64(c.BlockFloodMessages) * int64(floodWindow/time.Second),
		duration:   c.BlockDuration,
		exempt:     c.BlockExemptPrefixes(),
		mochi:      m,
		auth:       auth,
		log:        log.With("part", "block"),
		epoch:      time.Now(),
		blocks:     map[blockKey]*Block{},
		failures:   map[string]*window{},
		blocksTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_mqtt_blocks_total",
			Help: "MQTT blocks imposed, by kind (address, client) and reason (auth_failures, flood).",
		}, []string{"kind", "reason"}),
		blockedConnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_mqtt_blocked_connects_total",
			Help: "MQTT CONNECTs refused because their address or client id is blocked.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_mqtt_auth_failures_total",
			Help: "MQTT CONNECTs refused for a wrong or missing username or password.",
		}),
		exempted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_mqtt_block_exempted_total",
			Help: "Times an address in mqtt.block_exempt reached a block threshold and was not blocked, by reason.",
		}, []string{"reason"}),
	}
	if g.authWindow <= 0 {
		g.authWindow = int64(time.Minute)
	}
	// Every series from the start, so that rate() sees the first block.
	g.blocksTotal.WithLabelValues(KindAddress, ReasonAuthFailures)
	g.blocksTotal.WithLabelValues(KindAddress, ReasonFlood)
	g.blocksTotal.WithLabelValues(KindClient, ReasonFlood)
	g.exempted.WithLabelValues(ReasonAuthFailures)
	g.exempted.WithLabelValues(ReasonFlood)
	return g
}

func (g *guard) collectors() []prometheus.Collector {
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vigil_mqtt_blocks_active",
		Help: "MQTT blocks in force now.",
	}, func() float64 { return float64(len(g.list())) })
	return []prometheus.Collector{g.blocksTotal, g.blockedConnects, g.authFailures, g.exempted, active}
}

// now is a monotonic clock in nanoseconds for the counting windows.
func (g *guard) now() int64 { return int64(time.Since(g.epoch)) }

// remoteIP returns the IP address of a client's connection.
func remoteIP(cl *mqtt.Client) (netip.Addr, bool) {
	if cl.Net.Inline || cl.Net.Remote == "" {
		return netip.Addr{}, false
	}
	host, _, err := net.SplitHostPort(cl.Net.Remote)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// addressKey is what an address block covers: the IPv4 address, or the
// IPv6 /64 (one host can use a whole /64, and privacy addresses change).
func addressKey(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

func (g *guard) isExempt(a netip.Addr) bool {
	for _, p := range g.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// authFailed counts a refused login and blocks the client's address when it
// reaches the limit. It runs on the refused client's goroutine.
func (g *guard) authFailed(cl *mqtt.Client, username string) {
	g.authFailures.Inc()
	ip, ok := remoteIP(cl)
	if g.authLimit == 0 || !ok {
		return
	}
	key, now := addressKey(ip), g.now()
	g.mu.Lock()
	g.sweepLocked(now)
	w := g.failures[key]
	if w == nil {
		if len(g.failures) >= maxTracked {
			g.mu.Unlock()
			return
		}
		nw := newWindow(g.authWindow)
		w = &nw
		g.failures[key] = w
	}
	w.add(now)
	over, n := w.over(now, g.authLimit-1)
	if !over {
		g.mu.Unlock()
		return
	}
	delete(g.failures, key) // counting starts again after the block
	if g.isExempt(ip) {
		g.mu.Unlock()
		g.exempted.WithLabelValues(ReasonAuthFailures).Inc()
		g.log.Info("exempt address reached the failed-login limit; not blocked (mqtt.block_exempt)",
			"address", ip.String(), "client_id", cl.ID, "username", username, "count", n)
		return
	}
	b, isNew := g.addLocked(blockKey{KindAddress, key, ""}, ReasonAuthFailures, n, ip.String(), cl.ID, username)
	g.mu.Unlock()
	if isNew {
		g.announce(b)
		g.disconnectAddress(key)
	}
}

// flooded blocks a flooding client's id and address, and disconnects it
// and every other connection from the address. It reports false (and does
// nothing but count) if the address is exempt.
func (g *guard) flooded(cl *mqtt.Client, n int64) bool {
	ip, ok := remoteIP(cl)
	if !ok {
		return false
	}
	var username string
	if u := cl.Properties.Username; len(u) > 0 {
		username = string(u)
	}
	if g.isExempt(ip) {
		g.exempted.WithLabelValues(ReasonFlood).Inc()
		g.log.Info("client from an exempt address is flooding; not blocked (mqtt.block_exempt)",
			"address", ip.String(), "client_id", cl.ID, "username", username,
			"messages", n, "window", floodWindow.String())
		return false
	}
	kick(g.mochi, cl, packets.ErrMessageRateTooHigh)
	key := addressKey(ip)
	g.mu.Lock()
	cb, newClient := g.addLocked(blockKey{KindClient, cl.ID, username}, ReasonFlood, n, ip.String(), cl.ID, username)
	ab, newAddr := g.addLocked(blockKey{KindAddress, key, ""}, ReasonFlood, n, ip.String(), cl.ID, username)
	g.mu.Unlock()
	if newClient {
		g.announce(cb)
	}
	if newAddr {
		g.announce(ab)
		g.disconnectAddress(key)
	}
	return true
}

// addLocked adds a block unless one for the key is in force.
func (g *guard) addLocked(k blockKey, reason string, n int64, addr, clientID, username string) (Block, bool) {
	now := time.Now()
	if b, ok := g.blocks[k]; ok && now.Before(b.Until) {
		return *b, false
	} else if ok {
		g.active.Add(-1)
	}
	window := time.Duration(g.authWindow)
	if reason == ReasonFlood {
		window = floodWindow
	}
	b := &Block{
		Kind: k.kind, Key: k.key, Reason: reason, Since: now, Until: now.Add(g.duration), Count: n, WindowS: window.Seconds(),
		Address: addr, ClientID: clientID, Username: username,
	}
	g.blocks[k] = b
	g.active.Add(1)
	return *b, true
}

// announce counts, logs and reports a new block.
func (g *guard) announce(b Block) {
	g.blocksTotal.WithLabelValues(b.Kind, b.Reason).Inc()
	g.log.Warn("mqtt "+b.Kind+" blocked", "kind", b.Kind, "key", b.Key, "reason", b.Reason, "count", b.Count,
		"address", b.Address, "client_id", b.ClientID, "username", b.Username, "until", b.Until.Format(time.RFC3339))
	if f := g.onBlock.Load(); f != nil {
		(*f)(b)
	}
}

// disconnectAddress closes every connection from an address key but
// Vigil's own.
func (g *guard) disconnectAddress(key string) {
	for _, cl := range g.mochi.Clients.GetAll() {
		if cl.Closed() || g.auth.isOwn(cl) {
			continue
		}
		if ip, ok := remoteIP(cl); ok && addressKey(ip) == key {
			g.log.Info("disconnecting a client of a blocked address", "address", ip.String(), "client_id", cl.ID)
			kick(g.mochi, cl, packets.ErrAdministrativeAction)
		}
	}
}

// kick disconnects a client: MQTT 5 clients get a DISCONNECT with the
// reason first; MQTT 3.1.1 has no server DISCONNECT, so the connection is
// just closed.
func kick(m *mqtt.Server, cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = m.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}

// blocked returns the block in force on a connecting client's address, or
// on its client id used with its username, if any.
func (g *guard) blocked(cl *mqtt.Client) (Block, bool) {
	if g.active.Load() == 0 {
		return Block{}, false
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	check := func(k blockKey) (Block, bool) {
		b, ok := g.blocks[k]
		if !ok {
			return Block{}, false
		}
		if !now.Before(b.Until) {
			delete(g.blocks, k)
			g.active.Add(-1)
			return Block{}, false
		}
		return *b, true
	}
	if ip, ok := remoteIP(cl); ok {
		if b, ok := check(blockKey{KindAddress, addressKey(ip), ""}); ok {
			return b, true
		}
	}
	return check(blockKey{KindClient, cl.ID, string(cl.Properties.Username)})
}

// sweepLocked drops expired blocks and failure counts, at most once per
// counting window.
func (g *guard) sweepLocked(now int64) {
	if now-g.lastSweep < g.authWindow {
		return
	}
	g.lastSweep = now
	for k, w := range g.failures {
		if now-w.start >= 2*w.size {
			delete(g.failures, k)
		}
	}
	wall := time.Now()
	for k, b := range g.blocks {
		if !wall.Before(b.Until) {
			delete(g.blocks, k)
			g.active.Add(-1)
		}
	}
}

// list returns the blocks in force, oldest first.
func (g *guard) list() []Block {
	now := time.Now()
	g.mu.Lock()
	out := make([]Block, 0, len(g.blocks))
	for k, b := range g.blocks {
		if !now.Before(b.Until) {
			delete(g.blocks, k)
			g.active.Add(-1)
			continue
		}
		out = append(out, *b)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Block) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// lift removes the blocks on key (of either kind) and its failure count.
func (g *guard) lift(key string) bool {
	now := time.Now()
	addr := key
	if a, err := netip.ParseAddr(key); err == nil {
		addr = addressKey(a.Unmap().WithZone("")) // an IPv6 address: its /64
	}
	g.mu.Lock()
	lifted := false
	for k, b := range g.blocks {
		if (k.kind == KindAddress && k.key == addr) || (k.kind == KindClient && k.key == key) {
			delete(g.blocks, k)
			g.active.Add(-1)
			lifted = lifted || now.Before(b.Until)
		}
	}
	delete(g.failures, addr)
	g.mu.Unlock()
	if lifted {
		g.log.Info("mqtt block lifted", "key", key)
	}
	return lifted
}

// Blocks returns the blocks in force (expired ones are gone), oldest
// first.
func (s *Server) Blocks() []Block { return s.guard.list() }

// Unblock lifts the blocks on key, a Block.Key: an address (an IPv6
// address lifts its /64) or a client id (both, if they are spelt the same),
// and forgets the address's failed logins. It reports whether a block was
// in force.
func (s *Server) Unblock(key string) bool { return s.guard.lift(key) }

// SetOnBlock sets a function called once for each new block (a flood makes
// two: its client id and its address), after the block is in force. It runs
// on the goroutine of the client that caused the block, so it must return
// quickly: hand the Block to a queue. nil removes it. Safe to call at any
// time.
func (s *Server) SetOnBlock(f func(Block)) {
	if f == nil {
		s.guard.onBlock.Store(nil)
		return
	}
	s.guard.onBlock.Store(&f)
}
