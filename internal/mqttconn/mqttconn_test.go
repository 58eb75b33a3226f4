package mqttconn

import (
	"net"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// writes records each Write a connection gets.
type writes struct {
	net.Conn
	got [][]byte
}

func (w *writes) Write(p []byte) (int, error) {
	w.got = append(w.got, append([]byte(nil), p...))
	return len(p), nil
}

func TestPacketConnWritesEachPacketWhole(t *testing.T) {
	big := make([]byte, 200_000) // a three-byte remaining length
	for name, pk := range map[string]*packets.ControlPacket{
		"a PINGREQ":                       packets.NewControlPacket(packets.PINGREQ),
		"a SUBSCRIBE to several filters":  {FixedHeader: packets.FixedHeader{Type: packets.SUBSCRIBE, Flags: 2}, Content: &packets.Subscribe{PacketID: 1, Subscriptions: []packets.SubOptions{{Topic: "a/b", QoS: 1}, {Topic: "$SYS/#"}}}},
		"a PUBLISH of 200 kB":             {FixedHeader: packets.FixedHeader{Type: packets.PUBLISH}, Content: &packets.Publish{Topic: "t", QoS: 1, PacketID: 2, Payload: big}},
		"a PUBLISH with an empty payload": {FixedHeader: packets.FixedHeader{Type: packets.PUBLISH}, Content: &packets.Publish{Topic: "t"}},
	} {
		t.Run(name, func(t *testing.T) {
			w := &writes{}
			c := Whole(w)
			n, err := pk.WriteTo(c)
			if err != nil {
				t.Fatal(err)
			}
			if len(w.got) != 1 || int64(len(w.got[0])) != n {
				t.Fatalf("%d writes for a packet of %d bytes", len(w.got), n)
			}
			if l, ok := PacketLen(w.got[0]); !ok || l != len(w.got[0]) {
				t.Errorf("packetLen %d %v, want %d", l, ok, len(w.got[0]))
			}
		})
	}
}

func FuzzPacketLen(f *testing.F) {
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x80, 0x80, 0x80, 0x01})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := PacketLen(b)
		if ok && (n < 2 || n > 5+268_435_455) {
			t.Errorf("PacketLen(%x) = %d", b, n)
		}
	})
}

func TestReasonNameNamesEveryKindOfCode(t *testing.T) {
	for code, want := range map[byte]string{
		0x00: "Success", 0x01: "Granted QoS 1", 0x10: "No matching subscribers",
		0x86: "Bad User Name or Password",                  // CONNACK's own
		0x87: "Not authorized", 0x8E: "Session taken over", // DISCONNECT's
		0x91: "Packet Identifier in use", // the acks' own
		0x7F: "",                         // not defined
	} {
		if got := ReasonName(code); got != want {
			t.Errorf("0x%02X: %q, want %q", code, got, want)
		}
	}
}

func TestParseBrokerURLFillsInTheSchemesPort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":            "mqtt://127.0.0.1:1883",
		"broker:1884":          "mqtt://broker:1884",
		"tcp://broker":         "tcp://broker:1883",
		"mqtts://broker":       "mqtts://broker:8883",
		"ssl://broker":         "ssl://broker:8883",
		"tls://[::1]":          "tls://[::1]:8883",
		"ws://broker/mqtt":     "ws://broker:80/mqtt",
		"wss://broker:9443/mq": "wss://broker:9443/mq",
		"http://broker":        `scheme "http" is not one of`,
		"mqtt://:1883":         "has no host",
	} {
		u, err := ParseBrokerURL(in)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = u.String()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
