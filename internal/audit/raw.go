package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// rawConn is an MQTT 5 connection for probes that send what the
// specification forbids, which paho refuses to encode. Packets are encoded
// and decoded with mochi-mqtt's codec, which writes the fields it is given
// without validating them: wildcards or invalid UTF-8 in a topic name, QoS 3
// in a PUBLISH header or in a SUBSCRIBE's options.
//
// A goroutine reads the broker's packets as they come (so that a DISCONNECT
// is seen even while a large PUBLISH is being written); Close stops it.
type rawConn struct {
	conn    net.Conn
	timeout time.Duration
	stop    func() bool
	in      chan rawRead
	quit    chan struct{}
	done    chan struct{}
	err     error // what ended reading, once in is drained
	// Connack is the broker's answer to the CONNECT.
	Connack packets.Packet
	nextID  uint16
	pings   int // PINGREQs sent and not yet answered
}

// rawRead is a packet read, or the error that ended reading.
type rawRead struct {
	pk  packets.Packet
	err error
}

// rawReadLimit bounds the packets a probe reads (it subscribes to nothing
// large).
const rawReadLimit = 1 << 20

// probeGrace is how long a probe waits for the broker's answer before it
// sends a PINGREQ to tell a silent broker from a slow one. Pinging at once
// would cost evidence: a broker that closes the connection with the
// PINGREQ unread resets it, and the DISCONNECT it wrote is lost.
const probeGrace = 200 * time.Millisecond

// errNoAnswer is a read that timed out.
var errNoAnswer = errors.New("no answer")

// rawDial opens a connection for raw packets; cancelling ctx closes it.
func (env *Env) rawDial(ctx context.Context, ep Endpoint, id *Identity) (*rawConn, error) {
	conn, err := env.DialAs(ctx, ep, id)
	if err != nil {
		return nil, err
	}
	c := &rawConn{conn: conn, timeout: env.Opts.Timeout,
		in: make(chan rawRead, 16), quit: make(chan struct{}), done: make(chan struct{})}
	c.stop = context.AfterFunc(ctx, func() { conn.Close() })
	go c.readLoop(bufio.NewReader(conn))
	return c, nil
}

// connectPacket is a CONNECT with a clean start in protocol version v (4:
// MQTT 3.1.1, which has no properties; 5: MQTT 5), as id (nil or no
// username: anonymous).
func connectPacket(v byte, clientID string, id *Identity) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: clientID}}
	if id != nil && id.Username != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(id.Username)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(id.Password)
	}
	return pk
}

// connectRefused is a CONNECT the broker refused.
type connectRefused struct{ Code byte }

func (e *connectRefused) Error() string {
	return "CONNECT refused: CONNACK " + reasonName(e.Code)
}

// rawConnect opens a connection to ep and completes an MQTT 5 CONNECT as
// id; a refused CONNECT is a *connectRefused.
func (env *Env) rawConnect(ctx context.Context, ep Endpoint, clientID string, id *Identity) (*rawConn, error) {
	c, err := env.rawDial(ctx, ep, id)
	if err != nil {
		return nil, err
	}
	pk := connectPacket(5, clientID, id)
	if err := c.send(&pk); err != nil {
		c.Close()
		return nil, fmt.Errorf("send CONNECT: %w", err)
	}
	ack, err := c.next(c.timeout)
	switch {
	case err != nil:
		c.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	case ack.FixedHeader.Type != packets.Connack:
		c.Close()
		return nil, fmt.Errorf("the broker answered CONNECT with a %s", packetName(ack.FixedHeader.Type))
	case ack.ReasonCode >= 0x80:
		c.Close()
		return nil, &connectRefused{Code: ack.ReasonCode}
	}
	c.Connack = ack
	return c, nil
}

// Close closes the connection (without a DISCONNECT) and waits for its
// reader.
func (c *rawConn) Close() {
	c.stop()
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
	c.conn.Close()
	<-c.done
}

// readLoop reads packets until the connection ends.
func (c *rawConn) readLoop(r *bufio.Reader) {
	defer close(c.done)
	defer close(c.in)
	for {
		pk, err := readPacket(r)
		select {
		case c.in <- rawRead{pk, err}:
		case <-c.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// next returns the next packet the broker sent, waiting at most d
// (errNoAnswer after that).
func (c *rawConn) next(d time.Duration) (packets.Packet, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r, ok := <-c.in:
		if !ok {
			return packets.Packet{}, c.err
		}
		if r.err != nil {
			c.err = r.err
		}
		return r.pk, r.err
	case <-t.C:
		return packets.Packet{}, errNoAnswer
	}
}

// readPacket reads and decodes one MQTT 5 packet.
func readPacket(r *bufio.Reader) (packets.Packet, error) {
	hb, body, err := readFrame(r, rawReadLimit)
	if err != nil {
		return packets.Packet{}, err
	}
	return decodePacket(5, hb, body)
}

// readFrame reads one packet's first byte and its body, refusing a body
// longer than limit.
func readFrame(r *bufio.Reader, limit int) (byte, []byte, error) {
	hb, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return 0, nil, err
	}
	if n > limit {
		return 0, nil, fmt.Errorf("a %d-byte packet is larger than a probe reads", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hb, body, nil
}

// decodePacket decodes a packet of protocol version v (4: MQTT 3.1.1; 5:
// MQTT 5) from its first byte and body; of a type probes do not read, only
// the fixed header.
func decodePacket(v, hb byte, body []byte) (packets.Packet, error) {
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n := len(body)
	pk.FixedHeader.Remaining, pk.ProtocolVersion = n, v
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		// mochi's decoder skips a reason code without properties (a
		// remaining length of 1), which Mosquitto sends.
		if n == 1 {
			pk.ReasonCode = body[0]
		} else {
			err = pk.DisconnectDecode(body)
		}
	}
	return pk, err
}

// id returns a fresh packet identifier.
func (c *rawConn) id() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// send encodes and writes packets, in one write.
func (c *rawConn) send(pks ...*packets.Packet) error {
	b, err := encodePackets(5, pks...)
	if err != nil {
		return err
	}
	// Allow 1 MiB a second beyond the timeout.
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout + time.Duration(len(b))*time.Second/(1<<20)))
	_, err = c.conn.Write(b)
	return err
}

// encodePackets encodes packets, one after the other, in protocol version
// v (4: MQTT 3.1.1; 5: MQTT 5), which it sets in each.
func encodePackets(v byte, pks ...*packets.Packet) ([]byte, error) {
	var buf bytes.Buffer
	for _, pk := range pks {
		pk.ProtocolVersion = v
		var err error
		switch pk.FixedHeader.Type {
		case packets.Connect:
			err = pk.ConnectEncode(&buf)
		case packets.Publish:
			err = pk.PublishEncode(&buf)
		case packets.Subscribe:
			err = pk.SubscribeEncode(&buf)
		case packets.Pingreq:
			err = pk.PingreqEncode(&buf)
		case packets.Disconnect:
			err = pk.DisconnectEncode(&buf)
		default:
			err = fmt.Errorf("probes do not send %s", packetName(pk.FixedHeader.Type))
		}
		if err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// outcome is how a broker answered a probe.
type outcome struct {
	// Ack is the answer's packet type (PUBACK, PUBREC, SUBACK), 0 if none
	// came; Code is its reason code.
	Ack  byte
	Code byte
	// Ended: the broker closed the connection, after a DISCONNECT with
	// reason code Disconnect if Sent.
	Ended      bool
	Sent       bool
	Disconnect byte
	// Silent: the broker answered a PINGREQ sent after the probe but not
	// the probe itself, and kept the connection.
	Silent bool
	// NoAnswer: nothing came within the timeout.
	NoAnswer bool
}

// accepted tells whether the broker took the probe: a successful ack, or
// no objection at all.
func (o outcome) accepted() bool { return (o.Ack != 0 && o.Code < 0x80) || o.Silent }

// refused tells whether the broker refused the probe: an error ack or the
// end of the connection.
func (o outcome) refused() bool { return (o.Ack != 0 && o.Code >= 0x80) || o.Ended }

func (o outcome) String() string {
	switch {
	case o.Ack != 0:
		return packetName(o.Ack) + " " + reasonName(o.Code)
	case o.Ended && o.Sent:
		return "DISCONNECT " + reasonName(o.Disconnect)
	case o.Ended:
		return "connection closed"
	case o.Silent:
		return "no answer, connection kept (a PINGREQ sent after it was answered)"
	default:
		return "no answer"
	}
}

// probe sends pk and reads until the broker answers it (an ack of its
// packet identifier) or ends the connection. When nothing comes within
// probeGrace it sends a PINGREQ: a PINGRESP without an answer means the
// broker ignored pk and kept the connection. With pk nil it only pings:
// Silent then means the connection is alive.
func (c *rawConn) probe(pk *packets.Packet) (outcome, error) {
	var o outcome
	var err error
	pinged := pk == nil
	if pinged {
		err = c.ping()
	} else {
		err = c.send(pk)
	}
	if err != nil {
		if isClosed(err) {
			// Refused while it was being written (a packet too large
			// for the broker, say): see whether it said why.
			return c.ended(o), nil
		}
		return o, err
	}
	deadline := time.Now().Add(c.timeout)
	for {
		wait := time.Until(deadline)
		if !pinged {
			wait = min(wait, probeGrace)
		}
		ans, err := c.next(wait)
		switch {
		case errors.Is(err, errNoAnswer) && !pinged:
			if err := c.ping(); err != nil {
				return c.ended(o), nil
			}
			pinged = true
			continue
		case errors.Is(err, errNoAnswer):
			o.NoAnswer = true
			return o, nil
		case err != nil && isClosed(err):
			o.Ended = true
			return o, nil
		case err != nil:
			return o, fmt.Errorf("read the broker's answer: %w", err)
		}
		switch ans.FixedHeader.Type {
		case packets.Puback, packets.Pubrec, packets.Suback:
			if pk == nil || ans.PacketID != pk.PacketID {
				continue
			}
			o.Ack, o.Code = ans.FixedHeader.Type, ans.ReasonCode
			if ans.FixedHeader.Type == packets.Suback && len(ans.ReasonCodes) > 0 {
				o.Code = ans.ReasonCodes[0]
			}
			return o, nil
		case packets.Disconnect:
			o.Ended, o.Sent, o.Disconnect = true, true, ans.ReasonCode
			return o, nil
		case packets.Pingresp:
			if c.pings--; c.pings == 0 && pinged {
				o.Silent = true
				return o, nil
			}
		}
	}
}

// ping sends a PINGREQ.
func (c *rawConn) ping() error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}
	if err := c.send(&pk); err != nil {
		return err
	}
	c.pings++
	return nil
}

// ended reads what the broker said before the connection closed.
func (c *rawConn) ended(o outcome) outcome {
	o.Ended = true
	for {
		ans, err := c.next(c.timeout)
		if err != nil {
			return o
		}
		if ans.FixedHeader.Type == packets.Disconnect {
			o.Sent, o.Disconnect = true, ans.ReasonCode
			return o
		}
	}
}

// isClosed tells whether err means the connection ended: closed or reset
// by the peer, or closed here (the audit was cancelled).
func isClosed(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true // reset, broken pipe
	}
	s := err.Error()
	return strings.Contains(s, "websocket: close") || strings.Contains(s, "connection reset")
}

// packetName names an MQTT control packet type.
func packetName(t byte) string {
	if n, ok := packets.PacketNames[t]; ok {
		return strings.ToUpper(n)
	}
	return fmt.Sprintf("packet type %d", t)
}

// reasonName is an MQTT 5 reason code with its meaning, e.g. "0x87 (Not
// authorized)".
func reasonName(code byte) string {
	name := mqttconn.ReasonName(code)
	if name == "" {
		return fmt.Sprintf("0x%02X", code)
	}
	return fmt.Sprintf("0x%02X (%s)", code, name)
}
