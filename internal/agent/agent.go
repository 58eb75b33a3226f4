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
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/mqttconn"
	"github.com/vigilhq/vigil/internal/version"
)

// Config configures an agent.
type Config struct {
	ID       string
	Brokers  []string
	Username string
	Password string
	// Listen is the IP to receive on; Port the RTP port (RTCP is Port+1),
	// 0 for a free even port.
	Listen string
	Port   int
	// Advertise is the host cameras are told to send to; "" means the
	// Listen IP, or the first non-loopback address when Listen is 0.0.0.0.
	Advertise string
	Storage   string
	Capacity  int
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
	a := &Agent{cfg: cfg, log: log, started: time.Now(), bySSRC: map[uint32]*stream{}, byID: map[string]*stream{}, state: ingest.StateEmpty}
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
	mux.HandleFunc("GET /live/{id}", a.live)
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
	log.Info("agent ready", "id", cfg.ID, "rtp", a.addr, "capacity", cfg.Capacity, "storage", cfg.Storage)
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

// connect connects to the broker; it waits for the first connection until
// wait ends, and the connection lives until ctx ends.
func (a *Agent) connect(wait, ctx context.Context) error {
	cm, err := mqttconn.Connect(wait, ctx, mqttconn.Client{
		Brokers: a.cfg.Brokers, Username: a.cfg.Username, Password: a.cfg.Password,
		ClientID: ingest.AgentClientID(a.cfg.ID), KeepAlive: 10, ConnectTimeout: 5 * time.Second, MinBackoff: 100 * time.Millisecond,
		Will:          &paho.WillMessage{Topic: ingest.AgentTopic(a.cfg.ID, ingest.AgentState), Payload: []byte(ingest.StateOffline), QoS: 1},
		Subscriptions: []paho.SubscribeOptions{{Topic: ingest.AgentTopic(a.cfg.ID, ingest.AgentCmd), QoS: 1}},
		OnUp: func(_ context.Context, cm *autopaho.ConnectionManager) error {
			a.cm.Store(cm)
			a.publishState(true)
			a.heartbeat()
			return nil
		},
		OnMessage:      func(p *paho.Publish) { a.command(p.Payload) },
		OnConnectError: func(err error) { a.log.Debug("broker connection failed", "error", err) },
	})
	if cm != nil {
		a.cm.Store(cm)
	}
	return err
}

func (a *Agent) publish(topic string, v any, qos byte) {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cm := a.cm.Load()
	if cm == nil {
		a.log.Debug("publish before the first connection", "topic", topic)
		return
	}
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: topic, Payload: b, QoS: qos}); err != nil {
		a.log.Debug("publish failed", "topic", topic, "error", err)
	}
}

// publishState sends the state if it changed (or always, when forced).
func (a *Agent) publishState(force bool) {
	a.mu.Lock()
	n := len(a.byID)
	s := ingest.StateBusy
	switch {
	case n == 0:
		s = ingest.StateEmpty
	case n >= a.cfg.Capacity:
		s = ingest.StateFull
	}
	changed := s != a.state
	a.state = s
	a.mu.Unlock()
	if changed || force {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if cm := a.cm.Load(); cm != nil { // nil before the first connection, which says it
			cm.Publish(ctx, &paho.Publish{Topic: ingest.AgentTopic(a.cfg.ID, ingest.AgentState), Payload: []byte(s), QoS: 1})
		}
		if changed {
			a.log.Info("agent state", "state", s, "streams", n, "capacity", a.cfg.Capacity)
		}
	}
}

func (a *Agent) heartbeats(ctx context.Context) {
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.heartbeat()
		}
	}
}

func (a *Agent) heartbeat() {
	a.mu.Lock()
	hb := ingest.Heartbeat{
		ID: a.cfg.ID, Addr: a.addr, HTTPAddr: a.hAddr, Capacity: a.cfg.Capacity, State: a.state, Streams: []ingest.StreamStatus{},
		UnknownSSRC: a.unknownSSRC.Load(), WrongSource: a.wrongSource.Load(), NotRTP: a.notRTP.Load(), ByeRefused: a.byeRefused.Load(),
		Started: a.started, Version: version.Version,
	}
	for _, s := range a.byID {
		st := s.rx.Load().Stats()
		hb.Streams = append(hb.Streams, ingest.StreamStatus{StreamID: s.cmd.StreamID, Frames: st.Frames, Packets: st.Packets, Lost: st.Lost, JitterMS: st.JitterMillis})
	}
	a.mu.Unlock()
	a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentHeartbeat), hb, 0)
}

// command handles a message on vigil/agents/<id>/cmd.
func (a *Agent) command(payload []byte) {
	var c ingest.AgentCommand
	if err := json.Unmarshal(payload, &c); err != nil {
		a.log.Warn("bad command", "error", err)
		return
	}
	switch c.Action {
	case ingest.ActionExpect:
		if err := a.expect(c); err != nil {
			a.log.Warn("cannot receive stream", "stream", c.StreamID, "error", err)
			a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), ingest.SegmentReport{StreamID: c.StreamID, Dir: c.Dir, Segment: c.Segment, State: ingest.SegmentDone, Reason: "error: " + err.Error()}, 1)
			return
		}
		// Ready: the coordinator may now tell the camera to send.
		a.publish(ingest.AgentTopic(a.cfg.ID, ingest.AgentSegment), ingest.SegmentReport{StreamID: c.StreamID, Dir: c.Dir, Segment: c.Segment, State: ingest.SegmentExpecting}, 1)
	case ingest.ActionStop:
		a.mu.Lock()
		s := a.byID[c.StreamID]
		a.mu.Unlock()
		if s != nil {
			a.end(s, ingest.EndQuit)
		}
	default:
		a.log.Warn("unknown command", "action", c.Action)
	}
}

// expect starts receiving a stream.
func (a *Agent) expect(c ingest.AgentCommand) error {
	var dir string
	if !c.LiveOnly {
		var err error
		if dir, err = safeJoin(a.cfg.Storage, c.Dir); err != nil {
			return err
		}
		if c.Segment == "" || c.Segment != filepath.Base(c.Segment) || strings.HasPrefix(c.Segment, ".") {
			return fmt.Errorf("bad segment name %q", c.Segment)
		}
	}
	var source netip.Addr
	if c.Source != "" {
		var err error
		if source, err = netip.ParseAddr(c.Source); err != nil {
			return fmt.Errorf("bad source %q: not an IP address", c.Source)
		}
	}
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return errors.New("agent is stopping")
	}
	if old := a.byID[c.StreamID]; old != nil {
		a.mu.Unlock()
		return nil // a repeated command
	}
	if old := a.bySSRC[c.SSRC]; old != nil {
		a.mu.Unlock()
		return fmt.Errorf("SSRC %d is in use by stream %s", c.SSRC, old.cmd.StreamID)
	}
	a.mu.Unlock()

	var w *media.SegmentWriter
	var err error
	if !c.LiveOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if w, err = media.CreateSegment(filepath.Join(dir, c.Segment)); err != nil {
			return err
		}
	}
	rx, err := media.NewReceiver(c.SSRC, nil)
	if err != nil {
		if w != nil {
			w.Close()
		}
		return err
	}
	s := &stream{a: a, cmd: c, w: w, frames: make(chan media.Frame, 1024), created: time.Now(), done: make(chan struct{}),
		watchers: map[chan []byte]struct{}{}}
	s.rx.Store(rx)
	s.source = source.Unmap().WithZone("")
	a.mu.Lock()
	a.bySSRC[c.SSRC] = s
	a.byID[c.StreamID] = s
	a.mu.Unlock()
	a.wg.Add(1)
	go func() { defer a.wg.Done(); s.write() }()
	a.log.Info("expecting stream", "stream", c.StreamID, "ssrc", c.SSRC, "camera", c.Camera, "source", c.Source, "duration_s", c.Duration)
	a.publishState(false)
	return nil
}

// safeJoin joins a relative path under root, refusing escapes.
func safeJoin(root, rel string) (string, error) {
	if rel == "" || filepath.IsAbs(rel) {
		return "", fmt.Errorf("bad clip directory %q", rel)
	}
	clean := filepath.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("clip directory %q leaves the storage", rel)
	}
	return filepath.Join(root, clean), nil
}

// readRTP receives RTP (and multiplexed RTCP) datagrams.
func (a *Agent) readRTP() {
	buf := make([]byte, 65536)
	for {
		n, from, err := a.rtpConn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		now := time.Now()
		if media.IsRTCP(buf[:n]) {
			a.rtcpPacket(buf[:n], from)
			continue
		}
		data := append([]byte(nil), buf[:n]...) // the receiver may hold it to reorder
		var p rtp.Packet
		if err := p.Unmarshal(data); err != nil || p.Version != 2 {
			a.notRTP.Add(1)
			continue
		}
		a.mu.Lock()
		s := a.bySSRC[p.SSRC]
		a.mu.Unlock()
		if s == nil {
			a.unknownSSRC.Add(1)
			continue
		}
		s.receive(&p, from, now)
	}
}

func (a *Agent) readRTCP() {
	buf := make([]byte, 65536)
	for {
		n, from, err := a.rtcp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		a.rtcpPacket(buf[:n], from)
	}
}

// rtcpPacket ends the streams an RTCP BYE from from names, if it comes
// from their source (stream.byeFrom; otherwise it counts as wrong_source).
// A datagram whose BYEs name more than media.MaxByeSSRCs sources is
// refused whole (bye_refused).
func (a *Agent) rtcpPacket(b []byte, from *net.UDPAddr) {
	ssrcs, err := media.ByeSSRCs(b)
	if err != nil {
		a.byeRefused.Add(1)
		return
	}
	for _, ssrc := range ssrcs {
		a.mu.Lock()
		s := a.bySSRC[ssrc]
		a.mu.Unlock()
		if s == nil {
			continue
		}
		if !s.byeFrom(from.AddrPort().Addr()) {
			s.wrong(1)
			continue
		}
		s.bye()
		a.end(s, ingest.EndBye)
	}
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

// liveBoundary separates the frames of a live view.
const liveBoundary = "frame"

// live serves a stream's frames as they arrive, as multipart JPEG
// (multipart/x-mixed-replace), to whoever holds the stream's live token:
// vigil up, which proxies it to signed-in users. A stream without a token
// cannot be watched.
func (a *Agent) live(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	s := a.byID[r.PathValue("id")]
	a.mu.Unlock()
	token := r.URL.Query().Get("token")
	if s == nil || s.cmd.LiveToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.cmd.LiveToken)) != 1 {
		http.Error(w, "no such stream", http.StatusNotFound)
		return
	}
	frames, cancel, ok := s.watch()
	if !ok {
		http.Error(w, "stream ended", http.StatusGone)
		return
	}
	defer cancel()
	w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+liveBoundary)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// Each frame is followed at once by the next boundary, not preceded by
	// it: a reader (a browser) knows a frame is whole when it sees the
	// boundary, so it shows the frame as soon as it arrives rather than
	// when the next one starts. mime/multipart writes boundaries first.
	if _, err := io.WriteString(w, "--"+liveBoundary+"\r\n"); err != nil {
		return
	}
	rc.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case jpeg, ok := <-frames:
			if !ok {
				return
			}
			rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(w, "Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", len(jpeg)); err != nil {
				return
			}
			if _, err := w.Write(jpeg); err != nil {
				return
			}
			if _, err := io.WriteString(w, "\r\n--"+liveBoundary+"\r\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}
