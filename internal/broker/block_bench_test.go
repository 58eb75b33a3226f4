package broker

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/conf"
)

// rawConnect opens an anonymous MQTT 3.1.1 connection to addr.
func rawConnect(b *testing.B, addr, clientID string) net.Conn {
	b.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	var body bytes.Buffer
	body.Write([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(clientID))})
	body.WriteString(clientID)
	conn.Write(append([]byte{0x10, byte(body.Len())}, body.Bytes()...))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil || ack[3] != 0 {
		b.Fatalf("CONNACK % x: %v", ack, err)
	}
	return conn
}

// publishPacket encodes a QoS 0 PUBLISH with a 64-byte payload.
func publishPacket() []byte {
	topic, payload := "sensors/bench", bytes.Repeat([]byte("x"), 64)
	pk := []byte{0x30, byte(2 + len(topic) + len(payload)), 0, byte(len(topic))}
	pk = append(pk, topic...)
	return append(pk, payload...)
}

// BenchmarkPublishThroughput measures how fast the broker takes in QoS 0
// PUBLISH packets over loopback, with flood accounting off
// (mqtt.block_flood_messages: 0) and on (with a limit never reached), from
// one client and from 16 at once.
func BenchmarkPublishThroughput(b *testing.B) {
	for _, clients := range []int{1, 16} {
		for _, fl := range []struct {
			name  string
			limit int
		}{{"accounting=off", 0}, {"accounting=on", 10_000_000}} {
			b.Run(fmt.Sprintf("clients=%d/%s", clients, fl.name), func(b *testing.B) {
				c := conf.New().MQTT
				c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
				c.BlockExempt, c.BlockFloodMessages = nil, fl.limit
				s, err := Open(Config{MQTT: c, DataDir: b.TempDir()}, noUsers{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				conns := make([]net.Conn, clients)
				for i := range conns {
					conns[i] = rawConnect(b, s.Addr(TCP).String(), fmt.Sprint("bench-", i))
					defer conns[i].Close()
				}
				pk := publishPacket()
				const batch = 256
				buf := bytes.Repeat(pk, batch)
				received := &s.mochi.Info.MessagesReceived
				base := atomic.LoadInt64(received)

				b.ResetTimer()
				var wg sync.WaitGroup
				for i, conn := range conns {
					n := b.N / clients
					if i == 0 {
						n += b.N % clients
					}
					wg.Go(func() {
						for n > 0 {
							k := min(batch, n)
							if _, err := conn.Write(buf[:k*len(pk)]); err != nil {
								b.Error(err)
								return
							}
							n -= k
						}
					})
				}
				wg.Wait()
				deadline := time.Now().Add(time.Minute)
				for atomic.LoadInt64(received)-base < int64(b.N) {
					if time.Now().After(deadline) {
						b.Fatalf("broker took in %d of %d messages", atomic.LoadInt64(received)-base, b.N)
					}
					// Inside the timed run: a fine poll of mochi's own
					// counter, as WaitFor's 5 ms steps (or a hook to
					// signal) would be measured with the broker.
					time.Sleep(20 * time.Microsecond)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
				if bs := s.Blocks(); len(bs) != 0 {
					b.Fatalf("blocked: %+v", bs)
				}
			})
		}
	}
}

// BenchmarkFloodAccounting measures the hook's own cost per PUBLISH, with
// every goroutine its own client (as in the broker).
func BenchmarkFloodAccounting(b *testing.B) {
	c := conf.New().MQTT
	c.BlockFloodMessages = 10_000_000
	g := newGuard(c, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h := &guardHook{g: g}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "sensors/bench"}
	b.RunParallel(func(pb *testing.PB) {
		cl := &mqtt.Client{}
		h.meters.Store(cl, &meter{w: newWindow(int64(floodWindow))})
		for pb.Next() {
			if _, err := h.OnPacketRead(cl, pk); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSequentialPublish is a client that waits for each PUBACK before
// it publishes again (as Python paho-mqtt's wait_for_publish does): one
// op is a QoS 1 PUBLISH and its PUBACK. With acknowledgements held with a
// busy connection's messages it took 1.15 ms; written at once, about 11 µs.
func BenchmarkSequentialPublish(b *testing.B) {
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	s, err := Open(Config{MQTT: c, DataDir: b.TempDir()}, noUsers{}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	conn := rawConnect(b, s.Addr(TCP).String(), "bench-sequential")
	defer conn.Close()
	for i := 0; b.Loop(); i++ {
		id := uint16(i%65535 + 1)
		pk := []byte{0x32, 18, 0, 7, 's', 'e', 'n', 's', 'o', 'r', 's', byte(id >> 8), byte(id), 'p', 'a', 'y', 'l', 'o', 'a', 'd'}
		if _, err := conn.Write(pk); err != nil {
			b.Fatal(err)
		}
		if first, _, err := readFrame(conn); err != nil || first>>4 != typPuback {
			b.Fatalf("PUBACK: %#x %v", first, err)
		}
	}
}
