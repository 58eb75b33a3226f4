// Package agent is Vigil's video ingest agent (`vigil agent`), the seed's
// Docker container: it receives RTP/JPEG over UDP from the cameras the
// coordinator assigns to it, accepts only the SSRCs (and sources) it was
// told to expect, reassembles frames, writes each stream as clip segments
// into shared storage, and reports to the coordinator over MQTT: a
// heartbeat with its streams and capacity, "full" and "empty" state
// changes, and each segment it stores.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Config configures an agent.
type Config struct {
	ID       string
	Brokers  []string
	Username string
	Password string
	TLS      mqttconn.TLS // for mqtts:// and wss:// brokers
	// Listen is the IP to receive on; Port the RTP port (RTCP is Port+1),
	// 0 for a free even port.
	Listen string
	Port   int
	// Advertise is the host cameras are told to send to; "" means the
	// Listen IP, or the first non-loopback address when Listen is 0.0.0.0.
	Advertise string
	Storage   string
	// Capacity is how many JPEG streams the agent takes; RTSPCapacity how
	// many RTSP recordings and RingCapacity how many rings (pre-roll) when
	// it has nothing else. A mix takes its shares (ingest.Capacity).
	Capacity     int
	RTSPCapacity int
	RingCapacity int
	// Idle ends a stream that sent nothing for this long.
	Idle time.Duration
	// Grace is added to a stream's duration before the agent ends it.
	Grace     time.Duration
	Heartbeat time.Duration
	// HTTPListen is the address of the live view server; "" means the
	// Listen IP on a free port.
	HTTPListen string
}

// Agent is a running ingest agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	rtpConn *net.UDPConn
	rtcp    *net.UDPConn
	addr    string
	http    *http.Server
	httpLn  net.Listener
	hAddr   string
	cm      atomic.Pointer[autopaho.ConnectionManager]
	started time.Time

	mu      sync.Mutex
	bySSRC  map[uint32]*stream
	byID    map[string]*stream
	pulls   map[string]*pull    // RTSP streams, by id
	feeds   map[string]*feedRef // RTSP cameras pulled, by feedKey
	state   string
	closing bool

	unknownSSRC, wrongSource, notRTP, byeRefused atomic.Uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Open binds the UDP ports, connects to the broker and starts receiving.
// ctx bounds the wait for the first broker connection.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Agent, error) {
	if cfg.Capacity < 1 {
		return nil, errors.New("capacity must be at least 1")
	}
	if cfg.RTSPCapacity < 0 || cfg.RingCapacity < 0 {
		return nil, errors.New("RTSP and ring capacities cannot be negative")
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 3 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if err := os.MkdirAll(cfg.Storage, 0o700); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	a := &Agent{cfg: cfg, log: log, started: time.Now(), bySSRC: map[uint32]*stream{}, byID: map[string]*stream{},
		pulls: map[string]*pull{}, feeds: map[string]*feedRef{}, state: ingest.StateEmpty}
	var err error
	if a.rtpConn, a.rtcp, err = listenPair(cfg.Listen, cfg.Port); err != nil {
		return nil, err
	}
	for _, c := range []*net.UDPConn{a.rtpConn, a.rtcp} {
		c.SetReadBuffer(8 << 20)
	}
	port := a.rtpConn.LocalAddr().(*net.UDPAddr).Port
	host := cfg.Advertise
	if host == "" {
		host = advertiseHost(cfg.Listen)
	}
	a.addr = net.JoinHostPort(host, fmt.Sprint(port))
	hl := cfg.HTTPListen
	if hl == "" {
		hl = net.JoinHostPort(cfg.Listen, "0")
	}
	if a.httpLn, err = net.Listen("tcp", hl); err != nil {
		a.rtpConn.Close()
		a.rtcp.Close()
		return nil, fmt.Errorf("live view listener: %w", err)
	}
	a.hAddr = net.JoinHostPort(host, fmt.Sprint(a.httpLn.Addr().(*net.TCPAddr).Port))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live/{id}", a.live) // {id}.mp4 for RTSP streams
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if err := a.connect(ctx, runCtx); err != nil {
		cancel()
		a.rtpConn.Close()
		a.rtcp.Close()
		a.httpLn.Close()
		return nil, err
	}
	a.wg.Add(5)
	go func() { defer a.wg.Done(); a.http.Serve(a.httpLn) }()
	go func() { defer a.wg.Done(); a.readRTP() }()
	go func() { defer a.wg.Done(); a.readRTCP() }()
	go func() { defer a.wg.Done(); a.watch(runCtx) }()
	go func() { defer a.wg.Done(); a.heartbeats(runCtx) }()
	log.Info("agent ready", "id", cfg.ID, "rtp", a.addr, "capacity", cfg.Capacity, "rtsp_capacity", cfg.RTSPCapacity, "ring_capacity", cfg.RingCapacity, "storage", cfg.Storage)
	return a, nil
}

// Addr returns the host:port cameras send RTP to.
func (a *Agent) Addr() string { return a.addr }

// listenPair binds an even RTP port and the RTCP port above it.
func listenPair(host string, port int) (*net.UDPConn, *net.UDPConn, error) {
	ip := net.ParseIP(host)
	if host == "" {
		ip = net.IPv4zero
	}
	if ip == nil {
		return nil, nil, fmt.Errorf("listen address %q is not an IP", host)
	}
	try := func(p int) (*net.UDPConn, *net.UDPConn, error) {
		r, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: p})
		if err != nil {
			return nil, nil, err
		}
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: p + 1})
		if err != nil {
			r.Close()
			return nil, nil, err
		}
		return r, c, nil
	}
	if port != 0 {
		return try(port)
	}
	var last error
	for range 50 {
		r, c, err := try(20000 + 2*rand.IntN(20000))
		if err == nil {
			return r, c, nil
		}
		last = err
	}
	return nil, nil, fmt.Errorf("no free UDP port pair: %w", last)
}

// advertiseHost picks the address to give cameras.
func advertiseHost(listen string) string {
	ip := net.ParseIP(listen)
	if ip != nil && !ip.IsUnspecified() {
		return listen
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

// watch ends streams that are idle or past their duration.
func (a *Agent) watch(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.mu.Lock()
			var idle, over []*stream
			for _, s := range a.byID {
				last := s.lastPacket.Load()
				switch {
				case last == 0 && now.Sub(s.created) > a.cfg.Idle+5*time.Second:
					idle = append(idle, s) // never started
				case last != 0 && now.Sub(time.Unix(0, last)) > a.cfg.Idle:
					idle = append(idle, s)
				case s.cmd.Duration > 0 && now.Sub(s.created) > time.Duration(s.cmd.Duration)*time.Second+max(a.cfg.Grace, time.Duration(s.cmd.Duration)*time.Second/2):
					// A camera normally ends with BYE or quit; this only
					// stops one that keeps sending (or whose BYE was lost).
					over = append(over, s)
				}
			}
			a.mu.Unlock()
			for _, s := range idle {
				a.end(s, ingest.EndIdle)
			}
			for _, s := range over {
				a.end(s, ingest.EndDuration)
			}
		}
	}
}

// end stops receiving a stream; its writer finishes the segment and
// reports it.
func (a *Agent) end(s *stream, reason string) {
	a.mu.Lock()
	if a.byID[s.cmd.StreamID] != s {
		a.mu.Unlock()
		return
	}
	delete(a.byID, s.cmd.StreamID)
	delete(a.bySSRC, s.cmd.SSRC)
	a.mu.Unlock()
	s.stop(reason)
	<-s.done
	a.publishState(false)
}

// Close ends every stream (their segments are finished and reported),
// says "offline" and disconnects.
func (a *Agent) Close() error {
	a.mu.Lock()
	a.closing = true
	var all []*stream
	for _, s := range a.byID {
		all = append(all, s)
	}
	a.mu.Unlock()
	for _, s := range all {
		a.end(s, ingest.EndShutdown)
	}
	a.mu.Lock()
	var pulls []*pull
	for _, p := range a.pulls {
		pulls = append(pulls, p)
	}
	a.mu.Unlock()
	for _, p := range pulls {
		a.endPull(p, ingest.EndShutdown)
	}
	a.rtpConn.Close()
	a.rtcp.Close()
	hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
	a.http.Shutdown(hctx)
	hcancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	a.cm.Load().Publish(ctx, &paho.Publish{Topic: ingest.AgentTopic(a.cfg.ID, ingest.AgentState), Payload: []byte(ingest.StateOffline), QoS: 1})
	a.cm.Load().Disconnect(ctx)
	cancel()
	a.cancel()
	a.wg.Wait()
	return nil
}
