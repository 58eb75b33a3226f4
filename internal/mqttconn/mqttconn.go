// Package mqttconn is what Vigil's MQTT clients share: broker URLs
// (ParseBrokerURL) and TLS settings (TLSConfig); Connect, which connects
// a long-lived autopaho client (an agent, a camera, vigil sub, the
// simulator's devices), subscribes it and waits for its first
// connection; Dial, for one-shot paho clients and raw probes (the
// watcher, the audit), over TCP, TLS or WebSocket; and a connection that
// carries paho's MQTT packets whole (Whole): paho writes a packet in
// several Writes, which over TLS or WebSocket become records or frames of
// their own, and some brokers (Mosquitto 2.0) then leave the end of a
// packet unread until more data arrives. It also names MQTT 5 reason
// codes (ReasonName), for the audit's and the watcher's messages.
package mqttconn

import (
	"net"
	"sync"
)

// Whole wraps a connection so that each MQTT packet goes out in one Write.
func Whole(c net.Conn) *Conn { return &Conn{Conn: c} }

// Conn hands a connection whole MQTT packets, one Write each.
// paho writes a packet as several buffers and locks a connection that is a
// sync.Locker around them (it writes from several goroutines: its pinger,
// acknowledgements, the caller). On TCP they go out in one writev; on TLS
// and WebSocket each Write would be a record or frame of its own, and
// Mosquitto 2.0 then sometimes leaves the end of a packet unread until more
// data arrives (a SUBACK that never comes). Every paho write goes through
// packets.ControlPacket.WriteTo, which takes the lock.
type Conn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte
}

// Lock and Unlock make Conn a sync.Locker, which paho holds while it
// writes a packet.
func (c *Conn) Lock() { c.mu.Lock() }

// Unlock ends a packet's writes.
func (c *Conn) Unlock() {
	c.buf = c.buf[:0] // a packet left incomplete is not sent
	c.mu.Unlock()
}

// Write collects a packet's buffers and writes the packet when it is
// complete; the caller holds the lock.
func (c *Conn) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	if n, ok := PacketLen(c.buf); !ok || len(c.buf) < n {
		return len(p), nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// PacketLen reads an MQTT fixed header: the whole packet's length, or
// false if the header is not complete yet.
func PacketLen(b []byte) (int, bool) {
	remaining, mult := 0, 1
	for i := 1; i < len(b) && i <= 4; i++ {
		remaining += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return 1 + i + remaining, true
		}
		mult *= 128
	}
	return 0, false
}
