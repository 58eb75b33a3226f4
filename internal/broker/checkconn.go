package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// errPanicPacket ends a connection whose packet would have panicked
// mochi's decoder, or was malformed in a way mochi would let through.
var errPanicPacket = errors.New("malformed packet")

// checkedConn hands a client's bytes to mochi one whole packet at a time,
// each already decoded once, under recover, by the decoder mochi is about
// to run on it. mochi v2.7.9's decoders index past the end of some
// malformed packets (an MQTT 5 SUBSCRIBE whose filter has no options
// byte, for one), and a panic on a client's goroutine would end the whole
// process. A packet that panics here becomes a read error instead, before
// mochi sees a byte of it: mochi then ends the connection as it ends any
// broken one (last will, hooks, session clean-up), and nothing is left
// half-registered. The packets before it are delivered and processed.
//
// Anything else that is wrong (bad flags, a malformed length, a packet
// over the size limit) is left to mochi, which refuses it with its own
// reason: from then on the bytes pass through unchecked.
//
// It also bounds each write (mqtt.write_timeout): mochi writes to a
// client while holding that client's lock, which every publisher of a QoS
// 1 or 2 message for it takes too, so a client that stops reading would
// otherwise hold up everyone who publishes to its subscriptions for as
// long as it likes. A write that cannot finish in time closes the
// connection.
type checkedConn struct {
	net.Conn
	max          int                            // mqtt.max_packet_size: larger packets are mochi's to refuse
	onPanic      func(t byte, v any, at string) // told of each packet refused
	version      byte                           // the protocol version, from the CONNECT
	oddKeepAlive bool                           // the CONNECT's keep-alive is an odd number of seconds (see SetDeadline)
	writeTimeout time.Duration                  // 0: none
	onStall      func()                         // told when a write timed out
	order        *orderHook                     // told of each SUBSCRIBE received; nil: none
	subscribing  atomic.Int64                   // SUBSCRIBEs received, not yet in effect (see orderHook)

	buf                 []byte
	start, checked, end int  // buf[start:checked] may be read; buf[checked:end] is not yet checked
	pass                bool // stopped checking
	err                 error

	// Writes (see coalesceWindow).
	wmu       sync.Mutex
	lastWrite time.Time   // to the network
	held      []byte      // written by mochi, not yet to the network: a flush is due
	untilRead atomic.Bool // held from a CONNACK on, until mochi reads the next packet
	flushAt   *time.Timer // writes held, when due
	werr      error       // writing failed: the connection is closed
}

// checkBufSize is the first size of a connection's buffer; it grows to
// the largest packet the client sends and shrinks back once that is read.
const checkBufSize = 1024

func newCheckedConn(c net.Conn, maxPacket int, onPanic func(t byte, v any, at string)) *checkedConn {
	return &checkedConn{Conn: c, max: maxPacket, onPanic: onPanic}
}

// coalesceWindow gathers the messages written to a busy connection: a
// PUBLISH written within this of the connection's last write to the
// network is held and written with whatever follows it in that time, in
// one system call (an acknowledgement is not held, see Write). A
// subscriber to a whole fleet gets thousands of messages a second, each
// a write of its own (mochi writes a packet at once unless more wait in
// its queue): at 5,000 a second the writes cost more CPU than anything
// else the broker does for it. A connection written to less often than
// this (a device getting its acknowledgement each second) is written to
// at once, as before.
const coalesceWindow = time.Millisecond

// Write writes p within the write timeout, or closes the connection. It
// holds a CONNACK, and what follows it, until mochi reads again (see
// Read), and on a busy connection a PUBLISH for up to coalesceWindow (see
// there); anything else goes at once, after what is held. An error
// writing what was held closes the connection and is returned by the next
// Write.
func (c *checkedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.untilRead.Load() || c.lastWrite.IsZero() && len(p) > 0 && p[0]>>4 == packets.Connack {
		c.untilRead.Store(true)
		c.held = append(c.held, p...)
		return len(p), nil
	}
	now := time.Now()
	if len(p) > 0 && p[0]>>4 != packets.Publish {
		// An answer (PUBACK, SUBACK, PINGRESP...), which its client may be
		// waiting for before it sends more: written at once, after what is
		// held. Held, a client that waits for each PUBACK got one a
		// millisecond at most.
		c.lastWrite = now
		if len(c.held) == 0 {
			return c.write(p)
		}
		c.held = append(c.held, p...)
		c.flushLocked()
		if c.werr != nil {
			return 0, c.werr
		}
		return len(p), nil
	}
	if len(c.held) == 0 && now.Sub(c.lastWrite) >= coalesceWindow {
		c.lastWrite = now
		return c.write(p)
	}
	if len(c.held) == 0 { // the first held: its flush is due a window after the last write
		if due := c.lastWrite.Add(coalesceWindow).Sub(now); c.flushAt == nil {
			c.flushAt = time.AfterFunc(due, c.flushHeld)
		} else {
			c.flushAt.Reset(due)
		}
	}
	c.held = append(c.held, p...)
	return len(p), nil
}

// flushHeld writes what Write held.
func (c *checkedConn) flushHeld() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushLocked()
}

func (c *checkedConn) flushLocked() {
	if len(c.held) == 0 || c.werr != nil {
		return
	}
	c.lastWrite = time.Now()
	if _, err := c.write(c.held); err != nil { // c.werr holds it
		c.Conn.Close() // its reader ends the client as for any broken connection
	}
	c.held = c.held[:0]
	if cap(c.held) > 64<<10 {
		c.held = nil // give a burst's memory back
	}
}

// Close writes what is held (a DISCONNECT that ends a busy connection,
// say), for a second at most, then closes the connection. A write in
// progress is not waited for: closing is what ends one that is stuck.
func (c *checkedConn) Close() error {
	if c.wmu.TryLock() {
		if len(c.held) > 0 && c.werr == nil {
			c.Conn.SetWriteDeadline(time.Now().Add(closeFlush))
			c.Conn.Write(c.held)
			c.held = nil
		}
		if c.flushAt != nil {
			c.flushAt.Stop()
		}
		c.werr = net.ErrClosed
		c.wmu.Unlock()
	}
	return c.Conn.Close()
}

// closeFlush bounds writing what is held when a connection is closed.
const closeFlush = time.Second

// write writes p to the network within the write timeout, or closes the
// connection. Its caller holds wmu. A failed write is the connection's
// last: every Write after it returns its error (c.werr), so that a stall
// is counted once, however many writes mochi tries before it ends the
// client (a WebSocket connection returns the first timeout again for
// each of them).
func (c *checkedConn) write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	n, err := c.Conn.Write(p)
	if err == nil {
		return n, nil
	}
	c.werr = err
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		if c.onStall != nil {
			c.onStall()
		}
		c.Conn.Close()
	}
	return n, err
}

// SetDeadline sets the read deadline only: mochi sets both from the
// client's keep-alive whenever a packet arrives, which would stretch a
// write that is stuck because the client does not read.
//
// A client may be silent for one and a half times its keep-alive (MQTT
// 3.1.1 section 3.1.2.10, MQTT 5 section 3.1.2.10): mochi counts that in
// whole seconds and loses the half second of an odd keep-alive, so a
// client with a keep-alive of 1 s that pings each second was cut off at
// the instant it pinged. The half second is given back here.
func (c *checkedConn) SetDeadline(t time.Time) error {
	if c.oddKeepAlive && !t.IsZero() {
		t = t.Add(time.Second / 2)
	}
	return c.Conn.SetReadDeadline(t)
}

// Read gives mochi the next checked bytes. The first Read after a CONNACK
// sends it, with what followed it: mochi writes the CONNACK before its
// hooks have set the session up (the persistence hook writes it to disk),
// and a client that subscribed as soon as it read the CONNACK waited
// unread meanwhile, while messages published on other connections went
// past its subscription (16 times in 20 in a test of that pattern). Now
// the client learns it is connected when its next packet will be read at
// once.
func (c *checkedConn) Read(p []byte) (int, error) {
	if c.untilRead.Load() {
		c.wmu.Lock()
		c.untilRead.Store(false)
		c.flushLocked()
		c.wmu.Unlock()
	}
	for c.start == c.checked {
		if c.err != nil {
			return 0, c.err
		}
		if c.pass {
			if c.end > c.start {
				c.checked = c.end
				break
			}
			return c.Conn.Read(p)
		}
		if c.check() {
			break
		}
		if c.err != nil || c.pass {
			continue
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.start:c.checked])
	c.start += n
	if c.start == c.end {
		c.start, c.checked, c.end = 0, 0, 0
		if cap(c.buf) > 64<<10 {
			c.buf = nil // give a large packet's memory back
		}
	}
	return n, nil
}

// check moves c.checked past every whole packet buffered that decodes
// without a panic, and reports whether it moved.
func (c *checkedConn) check() bool {
	moved := false
	for {
		rest := c.buf[c.checked:c.end]
		if len(rest) < 2 {
			return moved
		}
		remaining, n, ok := varint(rest[1:])
		switch {
		case !ok:
			return moved // the length is not all here yet
		case n < 0:
			// Longer than MQTT's 4 bytes. mochi would take such a length
			// (when its high bits are zero) and then read on unchecked.
			c.err = fmt.Errorf("%w: a remaining length longer than 4 bytes", errPanicPacket)
			return moved
		case c.max > 0 && remaining+1 > c.max:
			c.pass = true // too large: mochi refuses it
			return moved
		}
		total := 1 + n + remaining
		if len(rest) < total {
			c.reserve(total)
			return moved
		}
		var fh packets.FixedHeader
		if fh.Decode(rest[0]) != nil {
			c.pass = true // bad flags: mochi refuses it
			return moved
		}
		fh.Remaining = remaining
		if v, at, panicked := c.decode(fh, rest[1+n:total]); panicked {
			c.err = fmt.Errorf("%w: %s packet would crash the decoder", errPanicPacket, packetName(fh.Type))
			if c.onPanic != nil {
				c.onPanic(fh.Type, v, at)
			}
			return moved
		}
		c.checked += total
		moved = true
		if fh.Type == packets.Subscribe && c.order != nil {
			c.order.received(c)
		}
	}
}

// decode runs mochi's decoder for fh's type on body, as mochi's
// Client.ReadPacket does, and reports whether it panicked. A CONNECT
// that decodes sets the protocol version later packets are decoded for.
func (c *checkedConn) decode(fh packets.FixedHeader, body []byte) (v any, at string, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			v, at, panicked = r, panicSite(), true
		}
	}()
	pk := packets.Packet{ProtocolVersion: c.version, FixedHeader: fh}
	var err error
	switch fh.Type {
	case packets.Connect:
		if err = pk.ConnectDecode(body); err == nil {
			c.version = pk.ProtocolVersion
			c.oddKeepAlive = pk.Connect.Keepalive%2 == 1
		}
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Subscribe:
		err = pk.SubscribeDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Auth:
		err = pk.AuthDecode(body)
	}
	_ = err // a decoding error is mochi's to report, on its own read of the packet
	return nil, "", false
}

// panicSite names the function of mochi's that panicked, from a deferred
// recover: the deepest frame in mochi's packets package.
func panicSite() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if i := strings.Index(f.Function, "/packets."); i >= 0 && strings.Contains(f.Function, "mochi-mqtt") {
			return fmt.Sprintf("%s:%d", f.Function[i+1:], f.Line)
		}
		if !more {
			return "unknown"
		}
	}
}

// reserve makes room in buf for a packet of total bytes at c.checked.
func (c *checkedConn) reserve(total int) {
	if need := c.checked + total; need > cap(c.buf) {
		if c.start > 0 { // move the unread bytes to the front first
			c.compact()
			if c.checked+total <= cap(c.buf) {
				return
			}
		}
		nb := make([]byte, c.end, max(c.checked+total, 2*cap(c.buf)))
		copy(nb, c.buf[:c.end])
		c.buf = nb
	}
}

func (c *checkedConn) compact() {
	n := copy(c.buf, c.buf[c.start:c.end])
	c.checked -= c.start
	c.end, c.start = n, 0
	c.buf = c.buf[:n]
}

// fill reads more of the connection into buf.
func (c *checkedConn) fill() error {
	if c.buf == nil {
		c.buf = make([]byte, 0, checkBufSize)
	}
	if c.end == cap(c.buf) {
		if c.start > 0 {
			c.compact()
		} else {
			c.reserve(2 * cap(c.buf))
		}
	}
	n, err := c.Conn.Read(c.buf[c.end:cap(c.buf)])
	c.end += n
	c.buf = c.buf[:c.end]
	if n > 0 {
		return nil
	}
	return err
}

// varint reads an MQTT variable byte integer: the value and its length in
// bytes; ok is false when b ends before it does, n is -1 when it is longer
// than 4 bytes.
func varint(b []byte) (v, n int, ok bool) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, false
		}
		v |= int(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, true
		}
	}
	return 0, -1, true
}

// packetName names an MQTT packet type for logs.
func packetName(t byte) string {
	if n, ok := packets.PacketNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", t)
}
