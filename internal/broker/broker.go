// Package broker runs Vigil's embedded MQTT broker (mochi-mqtt v2): TCP,
// WebSocket and TLS listeners bound synchronously, authentication and
// per-user ACLs with anonymous access limited to loopback listeners,
// response actions against clients that fail to log in repeatedly or flood
// (blocks), persistence of retained messages and sessions, $SYS topics, and
// in-process subscriptions for Vigil's own components.
package broker

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ratelog"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/users"
)

// Listener kinds.
const (
	TCP = "tcp"
	WS  = "ws"
	TLS = "tls"
)

// Config is what the broker needs from Vigil's configuration.
type Config struct {
	MQTT    conf.MQTT
	DataDir string
	// MaxInflight overrides the window of unacknowledged QoS 1 and 2
	// messages per client (0: MaxInflight).
	MaxInflight int
	// NoRetain are topic filters where no client but Vigil's own may leave
	// a retained message, nor a retained last will: the topics Vigil takes
	// commands on.
	NoRetain []string
	// Ingest, when set, is given every message published on
	// IngestFilters before the broker acknowledges it (see IngestHandler),
	// from the first client on.
	Ingest        IngestHandler
	IngestFilters []string
}

// Server is the running broker.
type Server struct {
	mochi *mqtt.Server
	auth  *authHook
	guard *guard
	addrs map[string]net.Addr // listener kind -> bound address
	log   *slog.Logger
	subID atomic.Int64
	// inline: the ids of the in-process subscriptions of each filter.
	inlineMu sync.Mutex
	inline   map[string][]int
	once     sync.Once

	hooks        []mqtt.Hook // ours, in the order added (see recovered)
	guardsMu     sync.Mutex
	guards       []*closeGuard // one per listener
	selfAudit    *selfAudit
	backlog      *backlogHook
	ingestHook   *ingestHook
	order        *orderHook
	cancelIngest context.CancelFunc
	writeTimeout time.Duration
	stop         chan struct{}
	wg           sync.WaitGroup
	contain      containment
	rlog         *ratelog.Logger
	maxPacket    int

	anonymousPolicy string
	connectTimeout  time.Duration
}

// readBufferSize is mochi's read buffer per client, on top of checkedConn.
const readBufferSize = 256

// Open binds every configured listener (so a port in use fails here, at
// once), installs the hooks and starts serving.
func Open(cfg Config, authn Authenticator, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	// Anonymous clients may be anything a port forward relays: they never
	// get Vigil's command topics, whatever mqtt.anonymous_publish says.
	for _, p := range cfg.MQTT.AnonymousPublish {
		for _, f := range cfg.NoRetain {
			if users.FiltersOverlap(p, f) {
				return nil, fmt.Errorf("mqtt.anonymous_publish: %q would let anonymous clients send Vigil's commands (%s); give those to users", p, f)
			}
		}
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MQTT.MaxPacketSize)
	caps.MaximumSessionExpiryInterval = 7 * 24 * 3600 // a week, like Mosquitto's persistent_client_expiration suggests
	// No age limit on messages: mochi's default (a day) drops every
	// retained message, and every message queued for a persistent
	// session, a day after it was published, whatever its own expiry. As
	// with Mosquitto, a message lasts until it is cleared, delivered, or
	// its MQTT 5 expiry interval ends it.
	caps.MaximumMessageExpiryInterval = 0
	// Each client has a channel of this many pointers, allocated whole and
	// scanned by every GC: 10,000 clients at mochi's default of 8192 make
	// 650 MB. A subscriber more than this far behind (and slow for longer
	// than mqtt.slow_subscriber_wait, see backlogHook) loses messages, as
	// with Mosquitto's max_queued_messages.
	caps.MaximumClientWritesPending = int32(cfg.MQTT.MaxQueuedMessages)
	// mochi copies a PUBLISH's properties (its user properties, content
	// type...) into the PUBACK or PUBREC that answers it. MQTT 5 section
	// 3.4.2.2 gives an acknowledgement only a reason string and user
	// properties of its own; clients that check (Eclipse Paho's test
	// client) drop the connection.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	maxInflight := cmp.Or(cfg.MaxInflight, MaxInflight)
	caps.MaximumInflight = uint16(maxInflight)
	sa := &selfAudit{}
	taps := &logTaps{}
	m := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// checkedConn already buffers each connection's reads a whole
		// packet at a time: mochi's own reader on top of it (2 KB a
		// client by default) only needs to hold a small packet's header.
		ClientNetReadBufferSize: readBufferSize,
		InlineClient:            true,
		SysTopicResendInterval:  int64(cfg.MQTT.SysInterval.Seconds()),
		Logger:                  slog.New(quietHandler{log.Handler(), slog.LevelWarn, sa, taps}).With("library", "mochi"),
	})
	s := &Server{mochi: m, addrs: map[string]net.Addr{}, log: log, anonymousPolicy: cfg.MQTT.Anonymous, connectTimeout: cfg.MQTT.ConnectTimeout,
		selfAudit: sa, contain: newContainment(), writeTimeout: cfg.MQTT.WriteTimeout, rlog: ratelog.New(log, time.Minute), maxPacket: cfg.MQTT.MaxPacketSize, stop: make(chan struct{})}
	s.auth = newAuthHook(authn, log, sa)
	s.auth.mochi, s.auth.noRetainFilters, s.auth.rlog = m, cfg.NoRetain, s.rlog
	s.auth.expire = func(cl *mqtt.Client) { s.expireSession(cl, errRevoked) }
	s.auth.claimGrace = cfg.MQTT.ClientIDGrace
	s.auth.anonymousUser = &users.User{Name: "", Role: "anonymous", Publish: cfg.MQTT.AnonymousPublish, Subscribe: cfg.MQTT.AnonymousSubscribe}
	s.guard = newGuard(cfg.MQTT, m, s.auth, log)
	s.auth.failed, s.auth.exempt = s.guard.authFailed, s.guard.isExempt
	quota := newQuotaHook(cfg.MQTT, m, s.auth, log, s.rlog) // after auth: it sees only what the ACLs let through
	s.backlog = newBacklogHook(cfg.MQTT.MaxQueuedMessages, maxInflight, cfg.MQTT.SlowSubscriberWait, s.rlog)
	taps.unacked = func(clientID string) {
		if cl, ok := m.Clients.Get(clientID); ok {
			s.backlog.droppedUnacked(cl)
		}
	}
	for _, h := range []mqtt.Hook{&guardHook{g: s.guard}, s.auth, quota, s.backlog} {
		if err := m.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("add %s hook: %w", h.ID(), err)
		}
		s.hooks = append(s.hooks, h)
	}
	if cfg.MQTT.Persistence {
		h, err := addPersistence(m, filepath.Join(cfg.DataDir, "broker.bolt"), quota, log)
		if err != nil {
			return nil, err
		}
		s.hooks = append(s.hooks, h)
	}
	// Last: it stores what every other hook let through.
	s.ingestHook = &ingestHook{srv: s, stop: func(cl *mqtt.Client, err error) { cl.Stop(err) }, filters: cfg.IngestFilters, h: cfg.Ingest}
	s.ingestHook.ctx, s.cancelIngest = context.WithCancel(context.Background())
	if err := m.AddHook(s.ingestHook, nil); err != nil {
		return nil, fmt.Errorf("add %s hook: %w", s.ingestHook.ID(), err)
	}
	s.hooks = append(s.hooks, s.ingestHook)
	// After everything else, just before mochi routes a message.
	s.order = &orderHook{}
	if err := m.AddHook(s.order, nil); err != nil {
		return nil, fmt.Errorf("add order hook: %w", err)
	}

	var bound []net.Listener
	fail := func(err error) (*Server, error) {
		for _, l := range bound {
			l.Close()
		}
		m.Close()
		return nil, err
	}
	add := func(kind, addr string, wrap func(net.Listener) (listeners.Listener, error)) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("mqtt %s listener: %w", kind, err)
		}
		bound = append(bound, ln)
		l, err := wrap(ln)
		if err != nil {
			return fmt.Errorf("mqtt %s listener: %w", kind, err)
		}
		if err := m.AddListener(newCloseGuard(l, s)); err != nil {
			return fmt.Errorf("mqtt %s listener: %w", kind, err)
		}
		s.addrs[kind] = ln.Addr()
		// Anonymous access never on WebSocket, where browsers and reverse
		// proxies stand in front, nor on TLS, which is for the network.
		anonymous := cfg.MQTT.Anonymous == conf.AnonymousLoopback && isLoopback(ln.Addr()) && kind == TCP
		s.auth.setListener(kind, anonymous)
		log.Info("mqtt listening", "listener", kind, "addr", ln.Addr().String(), "anonymous", anonymous)
		return nil
	}
	if err := add(TCP, cfg.MQTT.Listen, func(ln net.Listener) (listeners.Listener, error) {
		return listeners.NewNet(TCP, ln), nil
	}); err != nil {
		return fail(err)
	}
	if err := add(WS, cfg.MQTT.WSListen, func(ln net.Listener) (listeners.Listener, error) {
		return newWebsocket(WS, ln, cfg.MQTT.WSOrigins), nil
	}); err != nil {
		return fail(err)
	}
	if err := add(TLS, cfg.MQTT.TLSListen, func(ln net.Listener) (listeners.Listener, error) {
		cert, err := tls.LoadX509KeyPair(cfg.MQTT.TLSCert, cfg.MQTT.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load mqtt.tls_cert/mqtt.tls_key: %w", err)
		}
		// TLS 1.2 with forward-secret AEAD suites only (TLS 1.3's are
		// all such): no CBC, no RSA key exchange.
		tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}})
		return listeners.NewNet(TLS, tl), nil
	}); err != nil {
		return fail(err)
	}
	if err := m.Serve(); err != nil {
		return fail(fmt.Errorf("start broker: %w", err))
	}
	if reg != nil {
		if err := registerMetrics(reg, m, append(append(s.guard.collectors(), s.contain.panics, s.contain.stalls, s.backlog.dropped, s.backlog.waits), quota.collectors()...)...); err != nil {
			return fail(err)
		}
	}
	if lookup, ok := authn.(UserLookup); ok {
		s.wg.Add(1)
		go s.watchSessions(lookup)
	}
	return s, nil
}

// Addr returns the bound address of a listener kind (TCP, WS, TLS), or nil.
func (s *Server) Addr(kind string) net.Addr { return s.addrs[kind] }

// URL returns a client URL for a listener kind, such as mqtt://127.0.0.1:1883,
// with an unspecified bind address replaced by loopback.
func (s *Server) URL(kind string) string {
	a, ok := s.addrs[kind].(*net.TCPAddr)
	if !ok {
		return ""
	}
	host := a.IP
	if host.IsUnspecified() {
		host = net.IPv4(127, 0, 0, 1)
		if a.IP.To4() == nil {
			host = net.IPv6loopback
		}
	}
	scheme := map[string]string{TCP: "mqtt", WS: "ws", TLS: "mqtts"}[kind]
	return scheme + "://" + net.JoinHostPort(host.String(), fmt.Sprint(a.Port))
}

// Handler receives a message from an in-process subscription. It runs on
// the publishing client's goroutine: blocking it slows that client down
// (back-pressure) without dropping anything.
type Handler = func(topic string, payload []byte, clientID string)

// Subscribe subscribes in-process to filter; the retained messages of
// filter are handed to h before it returns.
func (s *Server) Subscribe(filter string, h Handler) error {
	id := int(s.subID.Add(1))
	s.inlineMu.Lock()
	if s.inline == nil {
		s.inline = map[string][]int{}
	}
	s.inline[filter] = append(s.inline[filter], id)
	s.inlineMu.Unlock()
	return s.mochi.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		h(pk.TopicName, pk.Payload, pk.Origin)
	})
}

// Unsubscribe ends the in-process subscriptions of filter.
func (s *Server) Unsubscribe(filter string) error {
	s.inlineMu.Lock()
	ids := s.inline[filter]
	delete(s.inline, filter)
	s.inlineMu.Unlock()
	for _, id := range ids {
		if err := s.mochi.Unsubscribe(filter, id); err != nil {
			return err
		}
	}
	return nil
}

// Publish publishes a message from Vigil itself (bypassing ACLs).
func (s *Server) Publish(topic string, payload []byte, retain bool, qos byte) error {
	return s.mochi.Publish(topic, payload, retain, qos)
}

// AddCredential lets a client log in as name with password and the ACL of
// u, without a user in the database: for agents, whose passwords live only
// as long as they do. With clientIDs, the login may use only those client
// ids, and nobody else may use them.
func (s *Server) AddCredential(name, password string, u *users.User, clientIDs ...string) {
	s.auth.creds.Store(name, credential{password: password, user: u, clientIDs: clientIDs})
	for _, id := range clientIDs {
		s.auth.reserved.Store(id, name)
	}
}

// RemoveCredential removes a credential added with AddCredential, and
// frees its client ids.
func (s *Server) RemoveCredential(name string) {
	if v, ok := s.auth.creds.LoadAndDelete(name); ok {
		for _, id := range v.(credential).clientIDs {
			s.auth.reserved.CompareAndDelete(id, name)
		}
	}
}

// ClientIP returns the IP address a connected client connects from, or "".
func (s *Server) ClientIP(clientID string) string {
	cl, ok := s.mochi.Clients.Get(clientID)
	if !ok || cl.Net.Remote == "" {
		return ""
	}
	host, _, err := net.SplitHostPort(cl.Net.Remote)
	if err != nil {
		return ""
	}
	return host
}

// ClientLogin returns the name a connected client logged in with: a
// user's name, an in-memory credential's name (AddCredential), or "" for
// an anonymous client. ok is false when no client with that id is
// connected. Vigil's own components use it to accept a message only from
// the connection it claims to come from (an agent's reports from that
// agent's credential).
func (s *Server) ClientLogin(clientID string) (name string, ok bool) {
	cl, ok := s.mochi.Clients.Get(clientID)
	if !ok || cl.Closed() {
		return "", false
	}
	return string(cl.Properties.Username), true
}

// AddListener adds a TCP listener while the broker runs (for example on a
// Docker network's gateway, for agents in containers). Anonymous clients
// are refused on it unless it is on loopback and mqtt.anonymous allows.
func (s *Server) AddListener(id, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt %s listener: %w", id, err)
	}
	l := newCloseGuard(listeners.NewNet(id, ln), s)
	s.auth.setListener(id, s.anonymousPolicy == conf.AnonymousLoopback && isLoopback(ln.Addr()))
	if err := s.mochi.AddListener(l); err != nil {
		ln.Close()
		return nil, err
	}
	go s.mochi.Listeners.Serve(id, s.mochi.EstablishConnection)
	s.log.Info("mqtt listening", "listener", id, "addr", ln.Addr().String())
	return ln.Addr(), nil
}

// InternalCredentials returns the username and password that Vigil's own
// MQTT clients (the demo fleet) use; they are valid only in this process.
func (s *Server) InternalCredentials() (username, password string) {
	return internalUser, s.auth.internalPassword
}

// BeginSelfAudit returns the client id prefix vigil up's self-audit must
// use (audit.Options.ClientID) until EndSelfAudit: the broker then knows
// its probes for what they are, from an address that is never blocked
// (mqtt.block_exempt), and neither logs their refusals as attacks nor
// counts its password guesses against the login limiter, so that the
// self-audit locks nobody out. The prefix is random, made anew each time,
// and means nothing once the audit has ended.
func (s *Server) BeginSelfAudit() string {
	p := "vigil-self-audit-" + rnd.Hex(8)
	s.selfAudit.prefix.Store(&p)
	return p
}

// EndSelfAudit ends what BeginSelfAudit began.
func (s *Server) EndSelfAudit() { s.selfAudit.prefix.Store(nil) }

// TakeSelfAuditCounts returns how many of the self-audit's CONNECTs were
// refused and how many of its packets broke the protocol since the last
// call (for one summary line per self-audit).
func (s *Server) TakeSelfAuditCounts() (refused, violations int64) {
	return s.selfAudit.refused.Swap(0), s.selfAudit.violations.Swap(0)
}

// ClientsConnected returns the number of connected clients.
func (s *Server) ClientsConnected() int64 { return atomic.LoadInt64(&s.mochi.Info.ClientsConnected) }

// Close disconnects every client and stops the broker. In-process
// subscription handlers have returned when it returns.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		// Stop taking messages to store, and let those being stored be
		// acknowledged, before clients are disconnected.
		s.ingestHook.drain(5*time.Second, s.cancelIngest)
		close(s.stop)
		s.wg.Wait()
		err = s.mochi.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	return err
}

func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}
