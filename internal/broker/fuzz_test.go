package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ratelog"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// How FuzzLiveBroker sends its stream of bytes: its first argument,
// modulo fuzzModes.
const (
	fuzzRaw     = iota // the stream is the whole conversation, its own CONNECT first: before authentication
	fuzzAnon3          // after an anonymous MQTT 3.1.1 CONNECT (full access, as on loopback)
	fuzzAnon5          // after an anonymous MQTT 5 CONNECT
	fuzzDevice3        // after a CONNECT as a device, whose ACL applies, MQTT 3.1.1
	fuzzDevice5        // the same, MQTT 5
	fuzzAdmin5         // after a CONNECT as an admin, MQTT 5
	fuzzModes
)

// The fuzz broker's accounts.
const (
	fuzzDevice         = "device1"
	fuzzDevicePassword = "device-password-1"
	fuzzAdmin          = "admin1"
	fuzzAdminPassword  = "admin-password-1"
)

type fuzzUsers struct{}

func (fuzzUsers) Authenticate(_ context.Context, name, password string) (*users.User, error) {
	role := ""
	switch {
	case name == fuzzDevice && password == fuzzDevicePassword:
		role = users.RoleDevice
	case name == fuzzAdmin && password == fuzzAdminPassword:
		role = users.RoleAdmin
	default:
		return nil, errors.New("wrong username or password")
	}
	pub, sub := users.DefaultACL(role)
	return &users.User{Name: name, Role: role, Publish: pub, Subscribe: sub}, nil
}

// fuzzBroker is a broker as `vigil up` runs it (persistence, loopback
// listener with anonymous access, users with ACLs, blocks), and a client
// of every protocol version subscribed to everything, which must stay
// connected and served whatever the fuzzed clients send.
type fuzzBroker struct {
	s        *Server
	addr     string
	watchers []*client
	received atomic.Int64
}

func startFuzzBroker(tb testing.TB) *fuzzBroker {
	tb.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen = "127.0.0.1:0", ""
	// Blocks would refuse loopback after a few fuzzed logins, and a fuzzed
	// flood would be cut: both are tested elsewhere, here they would only
	// stop the fuzzer from reaching the rest.
	c.BlockAuthFailures, c.BlockFloodMessages = 0, 0
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if path := os.Getenv("VIGIL_FUZZ_LOG"); path != "" {
		// Where the contained panics are logged, for a report of what a
		// fuzzing run found.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { f.Close() })
		log = slog.New(containedOnly{slog.NewTextHandler(f, nil)})
	}
	s, err := Open(Config{MQTT: c, DataDir: tb.TempDir()}, fuzzUsers{}, log, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	s.rlog = ratelog.New(log, 0) // every contained panic in the log, not one a minute
	fb := &fuzzBroker{s: s, addr: s.Addr(TCP).String()}
	user, password := s.InternalCredentials()
	for i, filter := range []string{"#", "$SYS/#"} {
		conn, err := net.DialTimeout("tcp", fb.addr, 2*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		w := &client{Client: paho.NewClient(paho.ClientConfig{Conn: conn})}
		w.AddOnPublishReceived(func(paho.PublishReceived) (bool, error) {
			fb.received.Add(1)
			return true, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ca, err := w.Connect(ctx, &paho.Connect{ClientID: "vigil-fuzz-watcher-" + string(rune('a'+i)), KeepAlive: 60, CleanStart: true,
			Username: user, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
		if err != nil || ca.ReasonCode != 0 {
			cancel()
			tb.Fatalf("watcher: %v", err)
		}
		_, err = w.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 2}}})
		cancel()
		if err != nil {
			tb.Fatalf("watcher: %v", err)
		}
		fb.watchers = append(fb.watchers, w)
		tb.Cleanup(func() { w.Disconnect(&paho.Disconnect{}) })
	}
	return fb
}

// containedOnly passes on only the log records of contained panics.
type containedOnly struct{ slog.Handler }

func (h containedOnly) Handle(ctx context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "crash") {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h containedOnly) WithAttrs(a []slog.Attr) slog.Handler {
	return containedOnly{h.Handler.WithAttrs(a)}
}

// preambleSuffix ends the client ids of the modes' own CONNECTs.
var preambleSuffix = "-" + rnd.Hex(6)

// preamble returns the CONNECT a mode sends before the stream.
func preamble(mode byte) []byte {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, Clean: true},
	}
	switch mode {
	case fuzzAnon3, fuzzDevice3:
		pk.ProtocolVersion = 4
	}
	switch mode {
	case fuzzDevice3, fuzzDevice5:
		pk.Connect.Username, pk.Connect.Password = []byte(fuzzDevice), []byte(fuzzDevicePassword)
	case fuzzAdmin5:
		pk.Connect.Username, pk.Connect.Password = []byte(fuzzAdmin), []byte(fuzzAdminPassword)
	}
	pk.Connect.UsernameFlag = len(pk.Connect.Username) > 0
	pk.Connect.PasswordFlag = pk.Connect.UsernameFlag
	// Ids the fuzzed streams cannot guess: a session a fuzzed CONNECT left
	// under another login would refuse them (client ids belong to logins).
	pk.Connect.ClientIdentifier = map[byte]string{fuzzAnon3: "fuzz-anon3", fuzzAnon5: "fuzz-anon5",
		fuzzDevice3: "fuzz-device3", fuzzDevice5: "fuzz-device5", fuzzAdmin5: "fuzz-admin5"}[mode] + preambleSuffix
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// send plays one fuzzed conversation: the mode's CONNECT (whose CONNACK
// must come back: the broker still serves), then the stream, then the end
// of what the client sends (a TCP half-close); it returns when the broker
// has closed the connection, having handled every whole packet.
func (fb *fuzzBroker) send(t *testing.T, mode byte, stream []byte) {
	conn, err := net.DialTimeout("tcp", fb.addr, 2*time.Second)
	if err != nil {
		t.Fatalf("the broker no longer accepts connections: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if mode != fuzzRaw {
		if _, err := conn.Write(preamble(mode)); err != nil {
			t.Fatalf("write CONNECT: %v", err)
		}
		hb, body, err := readFrame(conn)
		if err != nil || hb>>4 != packets.Connack || len(body) < 2 || body[1] != 0 {
			t.Fatalf("the broker refused a valid CONNECT (mode %d): %#x % x %v", mode, hb, body, err)
		}
	}
	if _, err := conn.Write(stream); err != nil {
		return // closed by the broker part way
	}
	conn.(*net.TCPConn).CloseWrite()
	if _, err := io.Copy(io.Discard, conn); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the broker kept the connection open 5 s after the client's end")
		}
	}
	// The broker closes the connection before a panic's recover has run:
	// wait until it has let go of it, so that what it counted is this
	// stream's.
	testkit.WaitFor(t, 5*time.Second, "the broker to let go of the connection", func() bool {
		return fb.openConns() <= len(fb.watchers)
	})
}

// openConns counts the connections the broker's listeners handle.
func (fb *fuzzBroker) openConns() int {
	fb.s.guardsMu.Lock()
	defer fb.s.guardsMu.Unlock()
	n := 0
	for _, g := range fb.s.guards {
		n += g.open()
	}
	return n
}

// readFrame reads one MQTT packet: its first byte and its body.
func readFrame(r io.Reader) (byte, []byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for i := 0; ; i++ {
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n |= int(l[0]&0x7f) << shift
		shift += 7
		if l[0]&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed length")
		}
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return b[0], body, err
}

// FuzzLiveBroker drives a running broker over real TCP connections with
// mutated conversations: the seeds in testdata/fuzz/FuzzLiveBroker were
// recorded from real clients (paho.golang, Debian's mosquitto_pub and
// mosquitto_sub, Python paho-mqtt, and `vigil audit`'s raw probes; see
// TestRecordLiveFuzzSeeds), each both as a whole conversation and, after
// its CONNECT, behind each mode's own login. Every packet type, for MQTT
// 3.1.1 and 5, before and after authentication, reaches mochi through
// Vigil's listener exactly as a client's would.
//
// The property: no input stops the process (a panic that escaped would
// end the fuzzing process and be reported with its input), the broker
// keeps accepting logins, and the watching clients stay connected. A
// packet that would panic mochi's decoder is expected and contained (it
// only ends its connection); a panic while handling a packet is a
// failure to look at, though contained too. Run it:
//
//	go test -run '^$' -fuzz FuzzLiveBroker -fuzztime 30m ./internal/broker
//
// with VIGIL_FUZZ_LOG=/tmp/fuzz.log to collect what was contained.
func FuzzLiveBroker(f *testing.F) {
	f.Add(byte(fuzzAnon5), []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61}) // issue 9's SUBSCRIBE without its options byte
	f.Add(byte(fuzzDevice3), []byte{0x30, 0x0a, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o'})
	fb := startFuzzBroker(f)
	f.Fuzz(func(t *testing.T, mode byte, stream []byte) {
		mode %= fuzzModes
		before := testutil.ToFloat64(fb.s.contain.panics.WithLabelValues(panicProcess))
		fb.send(t, mode, stream)
		for _, w := range fb.watchers {
			select {
			case <-w.Done():
				t.Fatal("a watching client was disconnected")
			default:
			}
		}
		if after := testutil.ToFloat64(fb.s.contain.panics.WithLabelValues(panicProcess)); after != before {
			t.Errorf("handling the stream panicked (contained): see the log")
		}
	})
}
