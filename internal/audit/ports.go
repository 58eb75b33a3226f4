package audit

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/wsconn"
)

// The open-ports check: which ports answer, and what they speak.

// scanParallel bounds the ports probed at once.
const scanParallel = 16

// portAnswer is what one port said.
type portAnswer struct {
	ep       Endpoint // its scheme is the one found (or the one given)
	open     bool     // accepts TCP connections
	mqtt     bool     // answered a CONNECT with a CONNACK
	detected bool     // the scheme was found out (a port of Options.Ports)
	note     string   // what else was seen, when not MQTT
	// instead is what a given URL's port speaks when it is not the
	// URL's scheme (found out as for Options.Ports).
	instead *portAnswer
}

func (a portAnswer) line() string {
	where := a.ep.URL()
	if a.ep.Scheme == "" {
		where = a.ep.Addr()
	}
	var what string
	switch {
	case a.mqtt && a.ep.TLS() && a.ep.WS():
		what = "speaks MQTT over secure WebSocket"
	case a.mqtt && a.ep.TLS():
		what = "speaks MQTT over TLS"
	case a.mqtt && a.ep.WS():
		what = "speaks MQTT over WebSocket"
	case a.mqtt:
		what = "speaks MQTT"
	default:
		what = "open, no MQTT answer"
		if a.note != "" {
			what += " (" + a.note + ")"
		}
	}
	if a.detected {
		what += ", detected"
	}
	if a.instead != nil && a.instead.mqtt {
		what += "; it speaks MQTT as " + a.instead.ep.URL()
	}
	return where + ": " + what
}

func checkOpenPorts(ctx context.Context, env *Env) ([]Finding, error) {
	answers, closed := scanPorts(ctx, env)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var lines []string
	nMQTT := 0
	for _, a := range answers {
		lines = append(lines, a.line())
		if a.mqtt || a.instead != nil && a.instead.mqtt {
			nMQTT++
		}
	}
	if len(closed) > 0 {
		lines = append(lines, "no answer: "+strings.Join(closed, ", "))
	}
	remedy := "Expose only the ports your clients need and bind the others to loopback or turn them off. " +
		"Mosquitto: one `listener PORT [ADDRESS]` per port, `listener 1883 127.0.0.1` for local-only. " +
		"EMQX: `listeners.tcp.default.bind`, `listeners.ssl.default.bind`, `listeners.ws.default.bind`, `listeners.wss.default.bind` (`enable = false` turns one off). " +
		"Vigil: `mqtt.listen`, `mqtt.ws_listen` and `mqtt.tls_listen` in vigil.yaml (\"\" turns one off)."
	if len(answers) == 0 {
		// The broker is down or not there: for a CI gate, that fails.
		return []Finding{{
			Severity:    High,
			Title:       "Nothing answers on the ports tried",
			Evidence:    strings.Join(lines, "\n"),
			Remediation: "Check the host name and the ports (a bare host tries 1883, 8883, 80, 443, 8080, 8083, 8084 and 9001; --ports adds others), and that no firewall drops them. The other checks are skipped.",
		}}, nil
	}
	if nMQTT == 0 {
		// Something listens, but not an MQTT broker (a web server, a
		// wrong port): for a CI gate, that fails too.
		return []Finding{{
			Severity: High,
			Title:    portsAnswering(len(answers)) + ", but none speaks MQTT",
			Evidence: strings.Join(lines, "\n"),
			Remediation: "Check that the URL or port is the broker's (a bare host tries 1883, 8883, 80, 443, 8080, 8083, 8084 and 9001; --ports adds others) " +
				"and that the broker is running and answers within --timeout. The checks that need MQTT are skipped.",
		}}, nil
	}
	return []Finding{{
		Severity:    Info,
		Title:       fmt.Sprintf("%s, MQTT on %d", portsAnswering(len(answers)), nMQTT),
		Evidence:    strings.Join(lines, "\n"),
		Remediation: remedy,
	}}, nil
}

func portsAnswering(n int) string {
	if n == 1 {
		return "1 port answers"
	}
	return fmt.Sprintf("%d ports answer", n)
}

func countNoun(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// scanPorts probes the target's endpoints and Options.Ports in parallel,
// records those that speak MQTT in env, and returns the answers (in the
// order tried) and the ports that did not answer.
func scanPorts(ctx context.Context, env *Env) ([]portAnswer, []string) {
	type job struct {
		ep    Endpoint
		given bool // scheme known
	}
	var jobs []job
	seen := map[int]bool{}
	for _, ep := range env.Target.Endpoints {
		jobs = append(jobs, job{ep, true})
		seen[ep.Port] = true
	}
	for _, p := range env.Opts.Ports {
		if p < 1 || p > 65535 || seen[p] {
			continue
		}
		seen[p] = true
		jobs = append(jobs, job{Endpoint{Host: env.Target.Host, Port: p}, false})
	}
	answers := make([]portAnswer, len(jobs))
	sem := make(chan struct{}, scanParallel)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if j.given {
				a, err := probeKnown(ctx, env, j.ep)
				if a.open && !a.mqtt && env.Target.Given && !timedOut(err) {
					// A URL with the wrong scheme: say what would work
					// (a port that stays silent would only be silent
					// again).
					d := probeUnknown(ctx, env, Endpoint{Host: j.ep.Host, Port: j.ep.Port})
					a.instead = &d
				}
				answers[i] = a
			} else {
				answers[i] = probeUnknown(ctx, env, j.ep)
			}
		}()
	}
	wg.Wait()

	var out []portAnswer
	var closed []string
	for _, a := range answers {
		if !a.open {
			closed = append(closed, strconv.Itoa(a.ep.Port))
			continue
		}
		out = append(out, a)
		if a.mqtt {
			env.AddMQTT(a.ep)
		}
		if d := a.instead; d != nil && d.mqtt {
			env.AddMQTT(d.ep)
		}
	}
	env.setScanned()
	return out, closed
}

// probeKnown checks that an endpoint of a known scheme accepts
// connections and answers MQTT.
func probeKnown(ctx context.Context, env *Env, ep Endpoint) (portAnswer, error) {
	a := portAnswer{ep: ep}
	open, err := mqttHello(ctx, env, ep)
	if !open {
		return a, nil
	}
	a.open = true
	if err != nil {
		a.note = probeNote(err, env.Opts.Timeout)
	} else {
		a.mqtt = true
	}
	return a, err
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// probeUnknown finds out whether a port is open and what it speaks: MQTT,
// else TLS (then MQTT or MQTT over WebSocket in it), else MQTT over
// WebSocket. The tries of a stage run at once, so that a port that never
// answers costs one timeout, not one per try.
func probeUnknown(ctx context.Context, env *Env, ep Endpoint) portAnswer {
	a := portAnswer{ep: ep, detected: true}
	as := func(scheme, path string) Endpoint {
		e := ep
		e.Scheme, e.Path = scheme, path
		return e
	}
	// The three tries run at once; the first that succeeds ends the
	// others (an HTTP server, for one, never answers a raw CONNECT). The
	// port is open if one of them connected.
	var mqttErr, wsErr error
	var mqttOpen, tlsOpen, tlsOK, wsOpen bool
	pctx, found := context.WithCancel(ctx)
	defer found()
	parallel(
		func() {
			if mqttOpen, mqttErr = mqttHello(pctx, env, as("mqtt", "")); mqttErr == nil {
				found()
			}
		},
		func() {
			if tlsOpen, tlsOK = tlsHandshakes(pctx, env, as("mqtts", "")); tlsOK {
				found()
			}
		},
		func() {
			if wsOpen, wsErr = mqttHello(pctx, env, as("ws", "/mqtt")); wsErr == nil {
				found()
			}
		},
	)
	if a.open = mqttOpen || tlsOpen || wsOpen; !a.open {
		return a
	}
	switch {
	case mqttErr == nil:
		a.ep, a.mqtt = as("mqtt", ""), true
	case tlsOK:
		var mqttsErr, wssErr error
		parallel(
			func() { _, mqttsErr = mqttHello(ctx, env, as("mqtts", "")) },
			func() { _, wssErr = mqttHello(ctx, env, as("wss", "/mqtt")) },
		)
		switch {
		case mqttsErr == nil:
			a.ep, a.mqtt = as("mqtts", ""), true
		case wssErr == nil:
			a.ep, a.mqtt = as("wss", "/mqtt"), true
		default:
			a.ep, a.note = as("mqtts", ""), "TLS, but neither MQTT nor MQTT over WebSocket inside"
		}
	case wsErr == nil:
		a.ep, a.mqtt = as("ws", "/mqtt"), true
	default:
		a.note = "neither MQTT, TLS nor WebSocket: " + probeNote(mqttErr, env.Opts.Timeout)
	}
	return a
}

// parallel runs functions at once and waits for them.
func parallel(fs ...func()) {
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
}

// probeNote says in words why a CONNECT got no CONNACK.
func probeNote(err error, timeout time.Duration) string {
	switch {
	case timedOut(err):
		return fmt.Sprintf("no answer to a CONNECT within %s", timeout)
	case errors.Is(err, errNotConnack):
		return "the answer to a CONNECT is not a CONNACK"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, errClosedEarly):
		return "it closed the connection without answering a CONNECT"
	default:
		return err.Error()
	}
}

// probeTLS is the client configuration of the transport probes: any
// certificate (tls-cert judges it), any version and suite Go still has,
// so that an old or odd server still shows what it speaks.
func probeTLS(host string) *tls.Config {
	return &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: true, // the probes look at what is offered; tls-cert verifies it
		MinVersion:         tls.VersionTLS10,
		CipherSuites:       allSuites(),
	}
}

// tlsHandshakes tells whether the port of an mqtts endpoint accepts a TCP
// connection, and whether a TLS handshake succeeds on it.
func tlsHandshakes(ctx context.Context, env *Env, ep Endpoint) (open, ok bool) {
	c, open, err := probeDial(ctx, env, ep)
	if err != nil {
		return open, false
	}
	c.Close()
	return true, true
}

// tlsHandshake connects and completes a TLS handshake with cfg.
func tlsHandshake(ctx context.Context, env *Env, ep Endpoint, cfg *tls.Config) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", ep.Addr())
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// probeDial connects to an endpoint for a probe: TLS without verifying,
// WebSocket with the subprotocol mqtt. open tells whether the port
// accepted a TCP connection, whatever happened next.
func probeDial(ctx context.Context, env *Env, ep Endpoint) (c net.Conn, open bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
	defer cancel()
	if ep.WS() {
		u := &url.URL{Scheme: "ws", Host: ep.Addr(), Path: ep.Path}
		if ep.TLS() {
			u.Scheme = "wss"
		}
		// The WebSocket dialer (gorilla) calls GotConn once its TCP
		// connection is made, before TLS and the HTTP upgrade.
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { open = true }})
		wc, _, err := wsconn.Dial(ctx, u, probeTLS(ep.Host))
		if err != nil {
			return nil, open, err
		}
		return wc, true, nil
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, "tcp", ep.Addr())
	if err != nil || !ep.TLS() {
		return c, err == nil, err
	}
	// What tls.Dialer does, after the TCP connection.
	tc := tls.Client(c, probeTLS(ep.Host))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, true, err
	}
	return tc, true, nil
}

var (
	errNotConnack  = errors.New("the answer is not an MQTT CONNACK")
	errClosedEarly = errors.New("the connection was closed without an answer")
)

// mqttHello sends an anonymous MQTT 3.1.1 CONNECT (never credentials: the
// port may be plaintext) and waits for a CONNACK, whatever its return
// code. An accepted connection is closed with a DISCONNECT. open tells
// whether the port accepted a TCP connection.
func mqttHello(ctx context.Context, env *Env, ep Endpoint) (open bool, err error) {
	c, open, err := probeDial(ctx, env, ep)
	if err != nil {
		return open, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.SetDeadline(time.Now().Add(env.Opts.Timeout)); err != nil {
		return true, err
	}
	connect := connectPacket(4, env.ClientID("ports"), nil)
	b, err := encodePackets(4, &connect)
	if err != nil {
		return true, err
	}
	if _, err := c.Write(b); err != nil {
		return true, err
	}
	code, err := readConnack(bufio.NewReader(c))
	if err != nil {
		return true, err
	}
	if code == 0 {
		bye := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}
		if b, err := encodePackets(4, &bye); err == nil {
			c.Write(b)
		}
	}
	return true, nil
}

// readConnack reads one packet and returns its return code if it is an
// MQTT 3.1.1 CONNACK. It looks at the first byte before reading on, so
// that what is not MQTT (an HTTP answer, a TLS alert) is told at once.
func readConnack(r *bufio.Reader) (byte, error) {
	first, err := r.Peek(1)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, errClosedEarly
		}
		return 0, err
	}
	var fh packets.FixedHeader
	if err := fh.Decode(first[0]); err != nil || fh.Type != packets.Connack {
		return 0, errNotConnack
	}
	hb, body, err := readFrame(r, 1<<16)
	if err != nil {
		return 0, errNotConnack
	}
	ack, err := decodePacket(4, hb, body) // fails on fewer than 2 bytes
	if err != nil {
		return 0, errNotConnack
	}
	return ack.ReasonCode, nil
}

// scanned makes sure open-ports' knowledge is there (it runs first, but
// may have been left out with --skip) and returns the endpoints that
// speak MQTT.
func scanned(ctx context.Context, env *Env) []Endpoint {
	env.mu.Lock()
	done := env.scannedPorts
	env.mu.Unlock()
	if !done {
		scanPorts(ctx, env)
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	return slices.Clone(env.mqtt)
}
