package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/bbolt"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ratelog"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/users"
)

// anyUser lets in any name whose password is the name + "-password", with
// full access: the quota tests need many logins, not ACLs.
type anyUser struct{}

func (anyUser) Authenticate(_ context.Context, name, password string) (*users.User, error) {
	if password != name+"-password" {
		return nil, errors.New("wrong username or password")
	}
	return &users.User{Name: name, Role: users.RoleAdmin, Publish: []string{"#"}, Subscribe: []string{"#"}}, nil
}

// quotaBroker is a broker with small quotas: 3 retained messages and
// 2048 bytes per login, 2 messages for all anonymous clients, 3
// subscriptions per login and 4 for all anonymous clients.
type quotaBroker struct {
	*Server
	reg   *prometheus.Registry
	quota *quotaHook
	mu    sync.Mutex
	logs  bytes.Buffer
}

// openQuota starts a quotaBroker on loopback; with dir, it persists there.
func openQuota(t *testing.T, dir string, mutate func(*conf.MQTT)) *quotaBroker {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", dir != ""
	c.AnonymousPublish, c.AnonymousSubscribe = []string{"#"}, []string{"#"}
	c.MaxRetainedMessages, c.MaxRetainedBytes = 3, 2048
	c.AnonymousMaxRetainedMessages, c.AnonymousMaxRetainedBytes = 2, 2048
	c.MaxSubscriptions, c.AnonymousMaxSubscriptions = 3, 4
	if mutate != nil {
		mutate(&c)
	}
	if dir == "" {
		dir = t.TempDir()
	}
	qb := &quotaBroker{reg: prometheus.NewRegistry()}
	s, err := Open(Config{MQTT: c, DataDir: dir}, anyUser{}, slog.New(slog.NewTextHandler(&lockedWriter{w: &qb.logs, mu: &qb.mu}, nil)), qb.reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.mochi.AddHook(&doneHook{}, nil); err != nil { // after Vigil's hooks
		t.Fatal(err)
	}
	qb.Server = s
	for _, h := range s.hooks {
		if q, ok := h.(*quotaHook); ok {
			qb.quota = q
		}
	}
	return qb
}

// done holds the clients whose disconnection every hook of Vigil's has
// seen (doneHook runs after them).
var done sync.Map // *mqtt.Client

type doneHook struct{ mqtt.HookBase }

func (doneHook) ID() string { return "test-done" }

func (doneHook) Provides(b byte) bool { return b == mqtt.OnDisconnect }

func (doneHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { done.Store(cl, true) }

func (qb *quotaBroker) log() string {
	qb.mu.Lock()
	defer qb.mu.Unlock()
	return qb.logs.String()
}

// retained returns the payload of topic's retained message, if any.
func (s *Server) retained(topic string) (string, bool) {
	pk, ok := s.mochi.Topics.Retained.Get(topic)
	return string(pk.Payload), ok
}

// publishRetained publishes a retained message with paho and returns the
// reason code of its acknowledgement (0 at QoS 0).
func publishRetained(t *testing.T, c *paho.Client, topic, payload string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: true})
	if pr == nil {
		if qos == 0 && err == nil {
			return 0
		}
		t.Fatalf("publish %s at QoS %d: no answer: %v", topic, qos, err)
	}
	return pr.ReasonCode
}

// connect311 connects with MQTT 3.1.1 over a raw socket as user ("":
// anonymous) and returns the connection after a successful CONNACK.
func connect311(t *testing.T, s *Server, clientID, user string) net.Conn {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, Clean: true, ClientIdentifier: clientID}}
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(user+"-password")
	}
	conn, err := net.DialTimeout("tcp", s.Addr(TCP).String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	send311(t, conn, pk)
	if hb, body, err := readFrame(conn); err != nil || hb != 0x20 || len(body) != 2 || body[1] != 0 {
		t.Fatalf("MQTT 3.1.1 CONNACK: %#x % x %v", hb, body, err)
	}
	return conn
}

// send311 writes an MQTT 3.1.1 packet.
func send311(t *testing.T, conn net.Conn, pk packets.Packet) {
	t.Helper()
	pk.ProtocolVersion = 4
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	case packets.Pingreq:
		err = pk.PingreqEncode(&b)
	}
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
}

func retained311(topic, payload string, qos byte, id uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: true},
		TopicName: topic, Payload: []byte(payload), PacketID: id}
}

// received is what a subscriber got.
type received struct {
	topic, payload string
	retain         bool
}

// subscriber connects a paho client as user, subscribes it to filter and
// returns what it receives.
func subscriber(t *testing.T, s *Server, clientID, user, filter string) chan received {
	t.Helper()
	c, _, code := connectAs(t, s, clientID, user)
	if code != 0 {
		t.Fatalf("subscriber refused: %#x", code)
	}
	got := make(chan received, 16)
	c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		got <- received{pr.Packet.Topic, string(pr.Packet.Payload), pr.Packet.Retain}
		return true, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return got
}

func next(t *testing.T, got chan received) received {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
		return received{}
	}
}

func TestALoginHoldsNoMoreRetainedMessagesThanItsQuota(t *testing.T) {
	qb := openQuota(t, "", nil)
	alice, _, _ := connectAs(t, qb.Server, "alice-1", "alice")
	for i, topic := range []string{"r/a/1", "r/a/2", "r/a/3"} {
		if code := publishRetained(t, alice, topic, "v", byte(i%3)); code > 2 {
			t.Fatalf("retained message %d within the quota: %#x", i+1, code)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "alice's messages retained", func() bool { _, ok := qb.retained("r/a/1"); return ok })

	t.Run("MQTT 5 at QoS 1 beyond the count is answered PUBACK 0x97 and nothing is retained", func(t *testing.T) {
		if code := publishRetained(t, alice, "r/a/4", "v", 1); code != 0x97 {
			t.Errorf("PUBACK %#x, want 0x97 (quota exceeded)", code)
		}
		if _, ok := qb.retained("r/a/4"); ok {
			t.Error("the fourth message was retained")
		}
	})
	t.Run("MQTT 5 at QoS 2 is answered PUBREC 0x97", func(t *testing.T) {
		if code := publishRetained(t, alice, "r/a/4", "v", 2); code != 0x97 {
			t.Errorf("PUBREC %#x, want 0x97", code)
		}
	})
	t.Run("at QoS 0 the message is delivered but not retained", func(t *testing.T) {
		got := subscriber(t, qb.Server, "watch-q0", "watcher", "r/a/q0")
		publishRetained(t, alice, "r/a/q0", "live", 0)
		if r := next(t, got); r.payload != "live" || r.retain {
			t.Errorf("subscriber got %+v, want the message, not retained", r)
		}
		if _, ok := qb.retained("r/a/q0"); ok {
			t.Error("the QoS 0 message was retained beyond the quota")
		}
	})
	t.Run("another login is unaffected", func(t *testing.T) {
		bob, _, _ := connectAs(t, qb.Server, "bob-1", "bob")
		for _, topic := range []string{"r/b/1", "r/b/2", "r/b/3"} {
			if code := publishRetained(t, bob, topic, "v", 1); code != 0 {
				t.Errorf("bob's %s: %#x", topic, code)
			}
		}
	})
	t.Run("another client of the same login shares its quota", func(t *testing.T) {
		alice2, _, _ := connectAs(t, qb.Server, "alice-2", "alice")
		if code := publishRetained(t, alice2, "r/a/5", "v", 1); code != 0x97 {
			t.Errorf("PUBACK %#x, want 0x97", code)
		}
	})
	t.Run("replacing one of its own messages takes no more room", func(t *testing.T) {
		if code := publishRetained(t, alice, "r/a/1", "new", 1); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
		if p, _ := qb.retained("r/a/1"); p != "new" {
			t.Errorf("r/a/1 holds %q", p)
		}
	})
	t.Run("clearing a message frees its room", func(t *testing.T) {
		publishRetained(t, alice, "r/a/2", "", 1)
		if code := publishRetained(t, alice, "r/a/6", "v", 1); code != 0 {
			t.Errorf("after clearing one: PUBACK %#x", code)
		}
	})
	t.Run("a message another login replaces or clears is no longer its owner's", func(t *testing.T) {
		carol, _, _ := connectAs(t, qb.Server, "carol-1", "carol")
		publishRetained(t, carol, "r/a/3", "carol's", 1) // now carol's
		publishRetained(t, carol, "r/a/6", "", 1)        // cleared
		for _, topic := range []string{"r/a/7", "r/a/8"} {
			if code := publishRetained(t, alice, topic, "v", 1); code != 0 {
				t.Errorf("alice's %s after carol took two of hers: PUBACK %#x", topic, code)
			}
		}
		if code := publishRetained(t, alice, "r/a/9", "v", 1); code != 0x97 {
			t.Errorf("alice's fourth: PUBACK %#x, want 0x97", code)
		}
	})
	t.Run("the byte quota counts topic and payload", func(t *testing.T) {
		dave, _, _ := connectAs(t, qb.Server, "dave-1", "dave")
		if code := publishRetained(t, dave, "r/d/1", strings.Repeat("x", 2000), 1); code != 0 {
			t.Fatalf("2005 bytes of 2048: PUBACK %#x", code)
		}
		if code := publishRetained(t, dave, "r/d/2", strings.Repeat("x", 40), 1); code != 0x97 {
			t.Errorf("2050 bytes of 2048: PUBACK %#x, want 0x97", code)
		}
		if code := publishRetained(t, dave, "r/d/1", strings.Repeat("x", 2100), 1); code != 0x97 {
			t.Errorf("replacing with a larger message beyond the quota: PUBACK %#x, want 0x97", code)
		}
		if p, _ := qb.retained("r/d/1"); len(p) != 2000 {
			t.Errorf("the refused replacement changed the retained message (%d bytes)", len(p))
		}
	})
	t.Run("refusals are counted by quota and logged once a minute", func(t *testing.T) {
		if n := testutil.ToFloat64(qb.quota.exceeded.WithLabelValues(quotaRetainedMessages)); n != 5 {
			t.Errorf("retained_messages refusals counted %v, want 5", n)
		}
		if n := testutil.ToFloat64(qb.quota.exceeded.WithLabelValues(quotaRetainedBytes)); n != 2 {
			t.Errorf("retained_bytes refusals counted %v, want 2", n)
		}
		if n := strings.Count(qb.log(), "retained message refused"); n != 1 {
			t.Errorf("%d log lines for 7 refusals, want 1:\n%s", n, qb.log())
		}
	})
}

func TestAnMQTT311ClientBeyondItsRetainedQuota(t *testing.T) {
	qb := openQuota(t, "", nil)
	conn := connect311(t, qb.Server, "old-1", "old")
	for i := range 3 {
		send311(t, conn, retained311("r/o/"+string(rune('1'+i)), "v", 1, uint16(i+1)))
		if hb, body, err := readFrame(conn); err != nil || hb != 0x40 || len(body) != 2 {
			t.Fatalf("PUBACK %d: %#x % x %v", i+1, hb, body, err)
		}
	}
	t.Run("at QoS 0 the message is delivered but not retained", func(t *testing.T) {
		got := subscriber(t, qb.Server, "watch-311", "watcher", "r/o/q0")
		send311(t, conn, retained311("r/o/q0", "live", 0, 0))
		if r := next(t, got); r.payload != "live" || r.retain {
			t.Errorf("subscriber got %+v, want the message, not retained", r)
		}
		if _, ok := qb.retained("r/o/q0"); ok {
			t.Error("retained beyond the quota")
		}
		send311(t, conn, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		if hb, _, err := readFrame(conn); err != nil || hb != 0xD0 {
			t.Errorf("the connection did not go on: %#x %v", hb, err)
		}
	})
	t.Run("at QoS 1 the client is disconnected, with no MQTT 5 DISCONNECT", func(t *testing.T) {
		send311(t, conn, retained311("r/o/4", "v", 1, 9))
		if b := readUntilClosed(t, conn); len(b) > 0 {
			t.Errorf("the broker answered % x before closing; MQTT 3.1.1 has no refusal", b)
		}
		if _, ok := qb.retained("r/o/4"); ok {
			t.Error("retained beyond the quota")
		}
	})
}

// barrierHook holds every retained PUBLISH that the quota let through
// until release is closed (the test closes it once each publish was
// either let through or refused): so that all of them were judged while
// none was retained yet.
type barrierHook struct {
	mqtt.HookBase
	passed  atomic.Int32
	release chan struct{}
}

func (h *barrierHook) ID() string           { return "test-barrier" }
func (h *barrierHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *barrierHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.passed.Add(1)
	select {
	case <-h.release:
	case <-time.After(10 * time.Second):
	}
	return pk, nil
}

func TestClientsOfOneLoginPublishingAtOnceCannotOvershootItsQuota(t *testing.T) {
	qb := openQuota(t, "", nil)
	const n = 20
	refused := func() int {
		n := 0.0
		for _, q := range []string{quotaRetainedMessages, quotaRetainedBytes, quotaSubscriptions} {
			n += testutil.ToFloat64(qb.quota.exceeded.WithLabelValues(q))
		}
		return int(n)
	}
	barrier := &barrierHook{release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(barrier.release) }) }
	t.Cleanup(release) // before the broker closes, should the test stop early
	if err := qb.mochi.AddHook(barrier, nil); err != nil {
		t.Fatal(err)
	}
	clients := make([]*paho.Client, n)
	for i := range clients {
		clients[i], _, _ = connectAs(t, qb.Server, fmt.Sprint("many-", i), "many")
	}
	codes := make(chan byte, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			pr, err := c.Publish(ctx, &paho.Publish{Topic: fmt.Sprint("r/m/", i), Payload: []byte("v"), QoS: 1, Retain: true})
			if pr == nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			codes <- pr.ReasonCode
		}()
	}
	testkit.WaitFor(t, 10*time.Second, "each publish to be let through or refused", func() bool {
		return int(barrier.passed.Load())+refused() >= n
	})
	release()
	wg.Wait()
	close(codes)
	accepted := 0
	for c := range codes {
		if c == 0 {
			accepted++
		}
	}
	held := 0
	for topic := range qb.mochi.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, "r/m/") {
			held++
		}
	}
	if accepted != 3 || held != 3 {
		t.Errorf("%d clients of one login at once: %d accepted, %d retained; want 3", n, accepted, held)
	}
}

// When clients race on one topic, mochi may store one message and then
// another before the hook hears of the first: whatever mochi ends up
// holding is charged to the login that published it, once, and the
// previous owner's share is freed.
func TestRacingPublishersLeaveATopicChargedToWhatMochiHolds(t *testing.T) {
	type step struct {
		who   string // "ann" or "ben"
		hook  bool   // false: mochi stores (or clears); true: the hook hears of it
		clear bool
	}
	for _, tt := range []struct {
		name  string
		steps []step
		owner string // "": nothing retained
	}{
		{"of two stores heard the other way round, the second is charged", []step{{"ann", false, false}, {"ben", false, false}, {"ben", true, false}, {"ann", true, false}}, "ben"},
		{"of two stores heard in order, the second is charged", []step{{"ann", false, false}, {"ben", false, false}, {"ann", true, false}, {"ben", true, false}}, "ben"},
		{"a store then a clear heard in order leave nothing charged", []step{{"ann", false, false}, {"ben", false, true}, {"ann", true, false}, {"ben", true, true}}, ""},
		{"a store then a clear heard the other way round leave nothing charged", []step{{"ann", false, false}, {"ben", false, true}, {"ben", true, true}, {"ann", true, false}}, ""},
		{"after a clear then a store heard in order, the store is charged", []step{{"ben", false, true}, {"ann", false, false}, {"ben", true, true}, {"ann", true, false}}, "ann"},
		{"after a clear then a store heard the other way round, the store is charged", []step{{"ben", false, true}, {"ann", false, false}, {"ann", true, false}, {"ben", true, true}}, "ann"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := slog.New(slog.DiscardHandler)
			m := mqtt.New(nil)
			q := newQuotaHook(conf.New().MQTT, m, newAuthHook(noUsers{}, log, &selfAudit{}), log, ratelog.New(log, time.Minute))
			clients := map[string]*mqtt.Client{}
			for _, login := range []string{"ann", "ben", "cat"} {
				cl := m.NewClient(nil, "tcp", login+"-1", false)
				cl.Properties.Username = []byte(login)
				clients[login] = cl
			}
			// cat holds the topic to begin with.
			first := packets.Packet{TopicName: "t", Payload: []byte("cat's"), Origin: "cat-1", Created: 1}
			m.Topics.RetainMessage(first)
			q.OnRetainMessage(clients["cat"], first, 1)
			pks := map[string]packets.Packet{}
			for i, st := range tt.steps {
				if !st.hook {
					pk := packets.Packet{TopicName: "t", Payload: []byte(st.who + "'s message"), Origin: st.who + "-1", Created: int64(i + 2)}
					if st.clear {
						pk.Payload = nil
					}
					pks[st.who] = pk
					m.Topics.RetainMessage(pk.Copy(false))
					continue
				}
				q.OnRetainMessage(clients[st.who], pks[st.who], 0)
			}
			o, ok := q.owners["t"]
			switch {
			case tt.owner == "" && ok:
				t.Errorf("nothing is retained, but %s is charged", o.login)
			case tt.owner != "" && (!ok || o.login != tt.owner || o.size != int64(len("t")+len(tt.owner+"'s message"))):
				t.Errorf("charged to %+v (%v), want %s", o, ok, tt.owner)
			}
			charged := 0
			for login, hd := range q.logins {
				if login != tt.owner || hd.messages != 1 {
					t.Errorf("%s holds %+v", login, hd)
				}
				charged++
			}
			if tt.owner != "" && charged != 1 {
				t.Errorf("%d logins charged", charged)
			}
		})
	}
}

func TestAnonymousClientsShareOneRetainedQuota(t *testing.T) {
	qb := openQuota(t, "", nil)
	first, _, _ := connectAs(t, qb.Server, "anon-1", "")
	second, _, _ := connectAs(t, qb.Server, "anon-2", "")
	publishRetained(t, first, "r/n/1", "v", 1)
	publishRetained(t, first, "r/n/2", "v", 1)
	if code := publishRetained(t, second, "r/n/3", "v", 1); code != 0x97 {
		t.Errorf("a third anonymous retained message: PUBACK %#x, want 0x97", code)
	}
	alice, _, _ := connectAs(t, qb.Server, "alice", "alice")
	if code := publishRetained(t, alice, "r/a/1", "v", 1); code != 0 {
		t.Errorf("a user after the anonymous clients' quota is full: PUBACK %#x", code)
	}
}

func TestARetainedLastWillBeyondTheQuotaIsDeliveredButNotRetained(t *testing.T) {
	qb := openQuota(t, "", func(c *conf.MQTT) { c.MaxRetainedMessages = 1 })
	got := subscriber(t, qb.Server, "watch-will", "watcher", "r/will/#")
	alice, _, _ := connectAs(t, qb.Server, "alice", "will")
	publishRetained(t, alice, "r/will/held", "v", 1)
	next(t, got)
	// connectWithWill logs in as "will" with the password "will-password".
	code, conn := connectWithWill(t, qb.Addr(TCP).String(), 5, "will", "r/will/status", true)
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	conn.Close() // the will goes out
	r := next(t, got)
	for r.topic == "r/will/held" {
		// mochi sends a subscription its retained messages after the
		// SUBACK, so a message retained just after it may come twice.
		r = next(t, got)
	}
	if r.topic != "r/will/status" || r.retain {
		t.Errorf("subscriber got %+v, want the will, not retained", r)
	}
	if _, ok := qb.retained("r/will/status"); ok {
		t.Error("the will was retained beyond its login's quota")
	}
}

func TestVigilsOwnClientsHaveNoQuota(t *testing.T) {
	qb := openQuota(t, "", nil)
	for i := range 5 {
		if err := qb.Publish("r/v/"+string(rune('a'+i)), []byte("v"), true, 0); err != nil {
			t.Fatal(err)
		}
	}
	user, password := qb.InternalCredentials()
	own, _, code := connectAs(t, qb.Server, "vigil-own", user, password)
	if code != 0 {
		t.Fatalf("internal login: %#x", code)
	}
	for i := range 5 {
		if code := publishRetained(t, own, "r/w/"+string(rune('a'+i)), "v", 1); code != 0 {
			t.Errorf("Vigil's login, retained message %d: PUBACK %#x", i+1, code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := own.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a"}, {Topic: "b"}, {Topic: "c"}, {Topic: "d"}, {Topic: "e"}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range sa.Reasons {
		if r >= 0x80 {
			t.Errorf("Vigil's login, subscription %d: %#x", i+1, r)
		}
	}
	// A user's message that Vigil replaces is no longer the user's.
	alice, _, _ := connectAs(t, qb.Server, "alice", "alice")
	for _, topic := range []string{"r/a/1", "r/a/2", "r/a/3"} {
		publishRetained(t, alice, topic, "v", 1)
	}
	if err := qb.Publish("r/a/1", []byte("vigil's"), true, 0); err != nil {
		t.Fatal(err)
	}
	if code := publishRetained(t, alice, "r/a/4", "v", 1); code != 0 {
		t.Errorf("after Vigil replaced one of alice's: PUBACK %#x", code)
	}
}

// A persistent session's subscriptions come back after a restart, but
// not those it was refused.
func TestRefusedSubscriptionsAreNotRestored(t *testing.T) {
	dir := t.TempDir()
	qb := openQuota(t, dir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A session that outlives the connection (CleanStart false, an expiry).
	conn, err := net.DialTimeout("tcp", qb.Addr(TCP).String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	expiry := uint32(3600)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "keeper", KeepAlive: 30, Username: "alice", UsernameFlag: true,
		Password: []byte("alice-password"), PasswordFlag: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatal(err)
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a"}, {Topic: "b"}, {Topic: "c"}, {Topic: "d"}, {Topic: "e"}}})
	if sa == nil || !bytes.Equal(sa.Reasons, []byte{0, 0, 0, 0x97, 0x97}) {
		t.Fatalf("SUBACK %v %v", sa, err)
	}
	c.Disconnect(&paho.Disconnect{})
	qb.Close()

	qb = openQuota(t, dir, nil)
	cl, ok := qb.mochi.Clients.Get("keeper")
	if !ok {
		t.Fatal("the persistent session was not restored")
	}
	if n := cl.State.Subscriptions.Len(); n != 3 {
		t.Errorf("the restored session holds %d subscriptions, want the 3 granted", n)
	}
}

func TestRetainedMessagesStayTheirOwnersAfterARestart(t *testing.T) {
	dir := t.TempDir()
	qb := openQuota(t, dir, nil)
	alice, _, _ := connectAs(t, qb.Server, "alice-1", "alice")
	for _, topic := range []string{"r/a/1", "r/a/2", "r/a/3"} {
		publishRetained(t, alice, topic, "v", 1)
	}
	for _, topic := range []string{"r/v/1", "r/v/2", "r/v/3"} {
		if err := qb.Publish(topic, []byte("vigil's"), true, 0); err != nil {
			t.Fatal(err)
		}
	}
	qb.Close()

	qb = openQuota(t, dir, nil)
	alice, _, _ = connectAs(t, qb.Server, "alice-1", "alice")
	if code := publishRetained(t, alice, "r/a/4", "v", 1); code != 0x97 {
		t.Errorf("alice's fourth after a restart: PUBACK %#x, want 0x97", code)
	}
	publishRetained(t, alice, "r/a/1", "", 1)
	if code := publishRetained(t, alice, "r/a/4", "v", 1); code != 0 {
		t.Errorf("after clearing a restored one: PUBACK %#x", code)
	}
	bob, _, _ := connectAs(t, qb.Server, "bob-1", "bob")
	for _, topic := range []string{"r/b/1", "r/b/2", "r/b/3"} {
		if code := publishRetained(t, bob, topic, "v", 1); code != 0 {
			t.Errorf("bob after Vigil's own messages were restored: PUBACK %#x", code)
		}
	}
}

// broker.bolt gives back the space of cleared retained messages at the
// next start, and keeps no record of a cleared message.
func TestBrokerBoltShrinksAtTheNextStartOnceRetainedMessagesAreCleared(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "broker.bolt")
	size := func() int64 {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	const n, payload = 100, 64 << 10
	qb := openQuota(t, dir, nil)
	big := bytes.Repeat([]byte("x"), payload)
	for i := range n {
		if err := qb.Publish("r/big/"+string(rune('A'+i/26))+string(rune('a'+i%26)), big, true, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := qb.Publish("r/keep", []byte("kept"), true, 0); err != nil {
		t.Fatal(err)
	}
	full := size()
	for i := range n {
		qb.Publish("r/big/"+string(rune('A'+i/26))+string(rune('a'+i%26)), nil, true, 0)
	}
	for i := range 1000 { // clearing topics that hold nothing stores nothing either
		qb.Publish("r/never/"+string(rune('A'+i/26))+string(rune('a'+i%26)), nil, true, 0)
	}
	// Nothing of Vigil's holds on to the cleared messages.
	if err := testutil.GatherAndCompare(qb.reg, strings.NewReader(fmt.Sprintf(`
# HELP vigil_mqtt_retained_bytes Bytes of retained messages held (topics, payloads and properties; $SYS topics aside).
# TYPE vigil_mqtt_retained_bytes gauge
vigil_mqtt_retained_bytes %d
`, len("r/keep")+len("kept"))), "vigil_mqtt_retained_bytes"); err != nil {
		t.Errorf("after clearing, the retained messages accounted are not just r/keep's: %v", err)
	}
	qb.Close()
	cleared := size()

	qb = openQuota(t, dir, nil)
	restarted := size()
	t.Logf("broker.bolt: %d bytes with %d × %d KiB retained, %d after clearing them, %d after the next start",
		full, n, payload>>10, cleared, restarted)
	if restarted*4 > cleared {
		t.Errorf("broker.bolt is %d bytes after the restart, %d before: not given back", restarted, cleared)
	}
	if p, ok := qb.retained("r/keep"); p != "kept" || !ok {
		t.Errorf("the message kept: %q %v", p, ok)
	}
	qb.Close()

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	records := 0
	db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, _ []byte) error {
				if strings.HasPrefix(string(k), storage.RetainedKey+"_") {
					records++
				}
				return nil
			})
		})
	})
	if records != 1 {
		t.Errorf("broker.bolt holds %d retained records, want 1", records)
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the compaction left its copy: %v", err)
	}
}

// subscribeTo subscribes c to filters at QoS 1 and returns the SUBACK's
// reason codes (1: granted).
func subscribeTo(t *testing.T, c *paho.Client, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub := &paho.Subscribe{}
	for _, f := range filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, sub)
	if sa == nil {
		t.Fatalf("SUBSCRIBE %v: %v", filters, err)
	}
	return sa.Reasons
}

func unsubscribeFrom(t *testing.T, c *paho.Client, filters ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters}); err != nil {
		t.Fatal(err)
	}
}

// connectSession connects paho (MQTT 5) as user with a session that
// outlives the connection by expiry seconds; cleanStart false resumes the
// session the client id has, if any. It returns the client and whether a
// session was resumed.
func connectSession(t *testing.T, s *Server, clientID, user string, expiry uint32, cleanStart bool) (*paho.Client, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(TCP).String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: cleanStart,
		Username: user, UsernameFlag: true, Password: []byte(user + "-password"), PasswordFlag: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect %s as %s: %v %v", clientID, user, ca, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, ca.SessionPresent
}

// leave disconnects c and waits until the broker is done with its
// connection: a clean session is gone, with its subscriptions (mochi
// forgets the client last); a persistent one is offline and Vigil's hooks
// have seen it go. s must come from openQuota.
func leave(t *testing.T, s *Server, c *paho.Client, clientID string) {
	t.Helper()
	cl, ok := s.mochi.Clients.Get(clientID)
	if !ok {
		t.Fatalf("%s is not connected", clientID)
	}
	c.Disconnect(&paho.Disconnect{})
	testkit.WaitFor(t, 10*time.Second, clientID+" to be disconnected", func() bool {
		if _, ok := done.Load(cl); !ok {
			return false
		}
		cur, ok := s.mochi.Clients.Get(clientID)
		clean := cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0 ||
			cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean
		return !clean || !ok || cur != cl
	})
}

// subscriptionsOf counts the subscriptions mochi holds for the sessions,
// connected or not, whose client ids start with prefix.
func subscriptionsOf(s *Server, prefix string) int {
	n := 0
	for id, cl := range s.mochi.Clients.GetAll() {
		if strings.HasPrefix(id, prefix) {
			n += cl.State.Subscriptions.Len()
		}
	}
	return n
}

func TestALoginHoldsNoMoreSubscriptionsThanItsQuota(t *testing.T) {
	qb := openQuota(t, "", nil)
	alice1, _, _ := connectAs(t, qb.Server, "alice-1", "alice")
	t.Run("MQTT 5: the filters beyond the quota get SUBACK 0x97, the others are granted", func(t *testing.T) {
		if got := subscribeTo(t, alice1, "a", "b", "a/#", "c", "d"); !bytes.Equal(got, []byte{1, 1, 1, 0x97, 0x97}) {
			t.Errorf("SUBACK % x, want 01 01 01 97 97", got)
		}
		if n := subscriptionsOf(qb.Server, "alice-1"); n != 3 {
			t.Errorf("the client holds %d subscriptions", n)
		}
	})
	t.Run("subscribing again to a filter it holds takes no room", func(t *testing.T) {
		if got := subscribeTo(t, alice1, "b", "b"); !bytes.Equal(got, []byte{1, 1}) {
			t.Errorf("SUBACK % x", got)
		}
	})
	alice2, _, _ := connectAs(t, qb.Server, "alice-2", "alice")
	t.Run("another client of the same login shares its quota", func(t *testing.T) {
		if got := subscribeTo(t, alice2, "x"); !bytes.Equal(got, []byte{0x97}) {
			t.Errorf("SUBACK % x, want 97", got)
		}
	})
	t.Run("a login spreading subscriptions over many client ids gets no more", func(t *testing.T) {
		var got []byte
		for i := range 10 {
			c, _, _ := connectAs(t, qb.Server, fmt.Sprint("spread-", i), "spread")
			got = append(got, subscribeTo(t, c, fmt.Sprint("s/", i))...)
		}
		if want := []byte{1, 1, 1, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97}; !bytes.Equal(got, want) {
			t.Errorf("SUBACKs % x, want % x", got, want)
		}
		if n := subscriptionsOf(qb.Server, "spread-"); n != 3 {
			t.Errorf("the login's clients hold %d subscriptions, want 3", n)
		}
	})
	t.Run("unsubscribing gives room back to any client of the login", func(t *testing.T) {
		unsubscribeFrom(t, alice1, "a", "never-subscribed")
		if got := subscribeTo(t, alice2, "x", "y"); !bytes.Equal(got, []byte{1, 0x97}) {
			t.Errorf("SUBACK % x, want 01 97", got)
		}
	})
	t.Run("a clean session's end gives its subscriptions back", func(t *testing.T) {
		leave(t, qb.Server, alice1, "alice-1") // it held b and a/#
		if got := subscribeTo(t, alice2, "y", "z", "w"); !bytes.Equal(got, []byte{1, 1, 0x97}) {
			t.Errorf("SUBACK % x, want 01 01 97", got)
		}
	})
	t.Run("MQTT 3.1.1: the filters beyond the login's quota get 0x80", func(t *testing.T) {
		subscribe311 := func(conn net.Conn, filters ...string) []byte {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1}
			for _, f := range filters {
				pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
			}
			send311(t, conn, pk)
			hb, body, err := readFrame(conn)
			if err != nil || hb != 0x90 || len(body) < 2 {
				t.Fatalf("SUBACK %#x % x %v", hb, body, err)
			}
			return body[2:]
		}
		if got := subscribe311(connect311(t, qb.Server, "old-1", "old"), "a", "b"); !bytes.Equal(got, []byte{1, 1}) {
			t.Errorf("first client: SUBACK % x, want 01 01", got)
		}
		if got := subscribe311(connect311(t, qb.Server, "old-2", "old"), "c", "d"); !bytes.Equal(got, []byte{1, 0x80}) {
			t.Errorf("second client: SUBACK % x, want 01 80", got)
		}
	})
	t.Run("another login is unaffected", func(t *testing.T) {
		bob, _, _ := connectAs(t, qb.Server, "bob-1", "bob")
		if got := subscribeTo(t, bob, "a", "b", "c"); !bytes.Equal(got, []byte{1, 1, 1}) {
			t.Errorf("SUBACK % x", got)
		}
	})
	t.Run("anonymous clients together are one login, with their own quota", func(t *testing.T) {
		first, _, _ := connectAs(t, qb.Server, "anon-1", "")
		second, _, _ := connectAs(t, qb.Server, "anon-2", "")
		if got := subscribeTo(t, first, "a", "b"); !bytes.Equal(got, []byte{1, 1}) {
			t.Errorf("first: SUBACK % x", got)
		}
		if got := subscribeTo(t, second, "a", "b", "c"); !bytes.Equal(got, []byte{1, 1, 0x97}) {
			t.Errorf("second: SUBACK % x, want 01 01 97 (4 for all anonymous clients)", got)
		}
	})
	t.Run("refusals are counted and logged once a minute", func(t *testing.T) {
		if n := testutil.ToFloat64(qb.quota.exceeded.WithLabelValues(quotaSubscriptions)); n != 14 {
			t.Errorf("counted %v, want 14", n)
		}
		if n := strings.Count(qb.log(), "subscriptions refused"); n != 1 {
			t.Errorf("%d log lines, want 1:\n%s", n, qb.log())
		}
	})
}

// subscribeBarrier holds every SUBSCRIBE, after the quota has judged it,
// until n of them have been judged: so that all of them were judged
// before mochi subscribed any.
type subscribeBarrier struct {
	mqtt.HookBase
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func (h *subscribeBarrier) ID() string           { return "test-subscribe-barrier" }
func (h *subscribeBarrier) Provides(b byte) bool { return b == mqtt.OnSubscribe }
func (h *subscribeBarrier) OnSubscribe(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	h.mu.Lock()
	if h.arrived++; h.arrived == h.n {
		close(h.all)
	}
	h.mu.Unlock()
	select {
	case <-h.all:
	case <-time.After(10 * time.Second):
	}
	return pk
}

func TestClientsOfOneLoginSubscribingAtOnceCannotOvershootItsQuota(t *testing.T) {
	qb := openQuota(t, "", nil)
	const n = 12
	if err := qb.mochi.AddHook(&subscribeBarrier{n: n, all: make(chan struct{})}, nil); err != nil {
		t.Fatal(err)
	}
	clients := make([]*paho.Client, n)
	for i := range clients {
		clients[i], _, _ = connectAs(t, qb.Server, fmt.Sprint("many-", i), "many")
	}
	codes := make(chan byte, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: fmt.Sprint("m/", i), QoS: 1}}})
			if sa == nil || len(sa.Reasons) != 1 {
				t.Errorf("client %d: %v %v", i, sa, err)
				return
			}
			codes <- sa.Reasons[0]
		}()
	}
	wg.Wait()
	close(codes)
	granted := 0
	for c := range codes {
		if c < 0x80 {
			granted++
		}
	}
	if held := subscriptionsOf(qb.Server, "many-"); granted != 3 || held != 3 {
		t.Errorf("%d clients of one login at once: %d granted, %d held; want 3", n, granted, held)
	}
}

func TestPersistentSessionsHoldTheirSubscriptionsUntilTheyEnd(t *testing.T) {
	qb := openQuota(t, "", nil)
	keeper, _ := connectSession(t, qb.Server, "keeper-1", "keeper", 3600, true)
	if got := subscribeTo(t, keeper, "k/1", "k/2", "k/3"); !bytes.Equal(got, []byte{1, 1, 1}) {
		t.Fatalf("SUBACK % x", got)
	}
	leave(t, qb.Server, keeper, "keeper-1")
	other, _, _ := connectAs(t, qb.Server, "keeper-2", "keeper")

	t.Run("an offline persistent session's subscriptions still count", func(t *testing.T) {
		if got := subscribeTo(t, other, "x"); !bytes.Equal(got, []byte{0x97}) {
			t.Errorf("SUBACK % x, want 97", got)
		}
	})
	t.Run("resuming the session keeps them counted", func(t *testing.T) {
		keeper, present := connectSession(t, qb.Server, "keeper-1", "keeper", 3600, false)
		if !present {
			t.Fatal("the session was not resumed")
		}
		if got := subscribeTo(t, keeper, "k/1", "k/4"); !bytes.Equal(got, []byte{1, 0x97}) {
			t.Errorf("SUBACK % x, want 01 97", got)
		}
		if got := subscribeTo(t, other, "x"); !bytes.Equal(got, []byte{0x97}) {
			t.Errorf("the other client: SUBACK % x, want 97", got)
		}
		leave(t, qb.Server, keeper, "keeper-1")
	})
	t.Run("a takeover with a clean start gives them back", func(t *testing.T) {
		keeper, present := connectSession(t, qb.Server, "keeper-1", "keeper", 3600, true)
		if present {
			t.Fatal("a clean start resumed the session")
		}
		if got := subscribeTo(t, other, "x", "y"); !bytes.Equal(got, []byte{1, 1}) {
			t.Errorf("SUBACK % x, want 01 01", got)
		}
		if got := subscribeTo(t, keeper, "k/1", "k/2"); !bytes.Equal(got, []byte{1, 0x97}) {
			t.Errorf("the new session: SUBACK % x, want 01 97", got)
		}
		leave(t, qb.Server, keeper, "keeper-1") // offline, holding k/1
	})
	t.Run("revocation gives them back", func(t *testing.T) {
		if n := qb.EndSessions("keeper"); n != 2 {
			t.Fatalf("%d sessions ended, want 2", n)
		}
		// A session's subscriptions go before mochi forgets the client.
		testkit.WaitFor(t, 10*time.Second, "keeper's sessions to end", func() bool {
			for id := range qb.mochi.Clients.GetAll() {
				if strings.HasPrefix(id, "keeper-") {
					return false
				}
			}
			return true
		})
		again, _, _ := connectAs(t, qb.Server, "keeper-3", "keeper")
		if got := subscribeTo(t, again, "x", "y", "z"); !bytes.Equal(got, []byte{1, 1, 1}) {
			t.Errorf("SUBACK % x, want 01 01 01", got)
		}
	})
}

// mochi forgets a client whose session expired but, by itself, leaves its
// subscriptions in its topic index and in broker.bolt.
func TestAnExpiredSessionGivesItsSubscriptionsBack(t *testing.T) {
	dir := t.TempDir()
	qb := openQuota(t, dir, nil)
	brief, _ := connectSession(t, qb.Server, "brief-1", "brief", 1, true)
	if got := subscribeTo(t, brief, "e/1", "e/2", "e/3"); !bytes.Equal(got, []byte{1, 1, 1}) {
		t.Fatalf("SUBACK % x", got)
	}
	leave(t, qb.Server, brief, "brief-1")
	other, _, _ := connectAs(t, qb.Server, "brief-2", "brief")
	if got := subscribeTo(t, other, "e/4"); !bytes.Equal(got, []byte{0x97}) {
		t.Errorf("before the session expired: SUBACK % x, want 97", got)
	}
	testkit.WaitFor(t, 10*time.Second, "the session to expire", func() bool { _, ok := qb.mochi.Clients.Get("brief-1"); return !ok })

	t.Run("its login's quota is given back", func(t *testing.T) {
		if got := subscribeTo(t, other, "e/4", "e/5"); !bytes.Equal(got, []byte{1, 1}) {
			t.Errorf("SUBACK % x, want 01 01", got)
		}
	})
	t.Run("nothing is delivered on its filters to the next client with its id", func(t *testing.T) {
		if subs := qb.mochi.Topics.Subscribers("e/1"); len(subs.Subscriptions) != 0 {
			t.Errorf("mochi still has subscribers to e/1: %v", subs.Subscriptions)
		}
		got := subscriber(t, qb.Server, "brief-1", "brief", "marker")
		qb.Publish("e/1", []byte("for the expired session"), false, 1)
		qb.Publish("marker", []byte("marker"), false, 1)
		if r := next(t, got); r.topic != "marker" {
			t.Errorf("the new client got %+v, a message for the expired session's subscription", r)
		}
	})
	t.Run("its subscriptions do not come back at the next start", func(t *testing.T) {
		qb.Close()
		qb = openQuota(t, dir, nil)
		if subs := qb.mochi.Topics.Subscribers("e/1"); len(subs.Subscriptions) != 0 {
			t.Errorf("after a restart mochi has subscribers to e/1: %v", subs.Subscriptions)
		}
	})
}

func TestSubscriptionQuotasHoldAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	qb := openQuota(t, dir, nil)
	keeper, _ := connectSession(t, qb.Server, "keeper-1", "keeper", 3600, true)
	if got := subscribeTo(t, keeper, "k/1", "k/2", "k/3", "k/4"); !bytes.Equal(got, []byte{1, 1, 1, 0x97}) {
		t.Fatalf("SUBACK % x", got)
	}
	bob, _ := connectSession(t, qb.Server, "bob-1", "bob", 3600, true)
	subscribeTo(t, bob, "b/1")
	leave(t, qb.Server, keeper, "keeper-1")
	leave(t, qb.Server, bob, "bob-1")
	qb.Close()

	qb = openQuota(t, dir, nil)
	other, _, _ := connectAs(t, qb.Server, "keeper-2", "keeper")
	t.Run("a restored offline session's subscriptions still count", func(t *testing.T) {
		if got := subscribeTo(t, other, "x"); !bytes.Equal(got, []byte{0x97}) {
			t.Errorf("SUBACK % x, want 97", got)
		}
	})
	t.Run("another login has what it had", func(t *testing.T) {
		bob2, _, _ := connectAs(t, qb.Server, "bob-2", "bob")
		if got := subscribeTo(t, bob2, "b/2", "b/3", "b/4"); !bytes.Equal(got, []byte{1, 1, 0x97}) {
			t.Errorf("SUBACK % x, want 01 01 97 (bob's restored session holds one)", got)
		}
	})
	t.Run("resumed, the session keeps them counted", func(t *testing.T) {
		keeper, present := connectSession(t, qb.Server, "keeper-1", "keeper", 3600, false)
		if !present {
			t.Fatal("the session was not restored")
		}
		if got := subscribeTo(t, keeper, "k/4"); !bytes.Equal(got, []byte{0x97}) {
			t.Errorf("SUBACK % x, want 97", got)
		}
		leave(t, qb.Server, keeper, "keeper-1")
	})
	t.Run("ended, the restored session gives them back", func(t *testing.T) {
		keeper, _ := connectSession(t, qb.Server, "keeper-1", "keeper", 0, true)
		leave(t, qb.Server, keeper, "keeper-1")
		if got := subscribeTo(t, other, "x", "y", "z"); !bytes.Equal(got, []byte{1, 1, 1}) {
			t.Errorf("SUBACK % x, want 01 01 01", got)
		}
	})
}

// A `vigil sim` fleet connects anonymously, and each simulated camera
// subscribes to its cmd topic: 10,000 of them must fit the shipped
// default. Offline persistent sessions count as connected ones do, so
// the devices take turns on a few connections (MQTT 3.1.1, clean session
// off, as many real devices connect) rather than holding 10,000 at once.
func TestAnAnonymousFleetOfOneSubscriptionPerDeviceFitsTheDefaultQuota(t *testing.T) {
	const devices, workers = 10000, 16
	s := openDefault(t, nil)
	ids := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var refused []string // "cam-00042: 0x80"
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				id := fmt.Sprintf("cam-%05d", i)
				conn, err := net.DialTimeout("tcp", s.Addr(TCP).String(), 5*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				code, err := func() (byte, error) {
					defer conn.Close()
					conn.SetDeadline(time.Now().Add(10 * time.Second))
					var b bytes.Buffer
					connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
						Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, ClientIdentifier: id}}
					subscribe := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
						Filters: packets.Subscriptions{{Filter: "vigil/sim/" + id + "/cmd", Qos: 1}}}
					if err := connect.ConnectEncode(&b); err != nil {
						return 0, err
					}
					if err := subscribe.SubscribeEncode(&b); err != nil {
						return 0, err
					}
					if _, err := conn.Write(b.Bytes()); err != nil {
						return 0, err
					}
					if hb, body, err := readFrame(conn); err != nil || hb != 0x20 || len(body) != 2 || body[1] != 0 {
						return 0, fmt.Errorf("CONNACK %#x % x %v", hb, body, err)
					}
					hb, body, err := readFrame(conn)
					if err != nil || hb != 0x90 || len(body) != 3 {
						return 0, fmt.Errorf("SUBACK %#x % x %v", hb, body, err)
					}
					return body[2], nil
				}()
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				if code != 1 {
					mu.Lock()
					refused = append(refused, fmt.Sprintf("%s: %#x", id, code))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range devices {
		ids <- i
	}
	close(ids)
	wg.Wait()
	if len(refused) > 0 {
		t.Errorf("%d of %d devices' subscriptions refused, such as %s", len(refused), devices, refused[0])
	}
	testkit.WaitFor(t, 10*time.Second, "every device offline", func() bool { return s.ClientsConnected() == 0 })
	if n := subscriptionsOf(s, "cam-"); n != devices {
		t.Errorf("the fleet's sessions hold %d subscriptions, want %d", n, devices)
	}
}

// After a crash, the clean sessions left in broker.bolt are dropped at the
// next start and so are their subscriptions: the next client with such an
// id gets nothing it did not subscribe to.
func TestAfterACrashNobodyInheritsACleanSessionsSubscriptions(t *testing.T) {
	dir := t.TempDir()
	qb := openQuota(t, dir, nil)
	crashed := connect311(t, qb.Server, "crash-1", "")
	var body bytes.Buffer
	body.Write([]byte{0, 1})
	mqttString(&body, "c/1")
	body.WriteByte(1)
	crashed.Write(append([]byte{0x82, byte(body.Len())}, body.Bytes()...))
	if hb, _, err := readFrame(crashed); err != nil || hb != 0x90 {
		t.Fatalf("SUBACK %#x %v", hb, err)
	}
	// kill -9: broker.bolt as it is on disk now, the session still in it.
	snapshot := t.TempDir()
	b, err := os.ReadFile(filepath.Join(dir, "broker.bolt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snapshot, "broker.bolt"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	qb.Close()

	next := openQuota(t, snapshot, nil)
	got := make(chan string, 4)
	c, _, code := connectAs(t, next.Server, "crash-1", "")
	if code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet.Topic; return true, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "c/marker", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// In this order to the same client: c/1 would come before the marker.
	for _, topic := range []string{"c/1", "c/marker"} {
		if err := next.Publish(topic, []byte("x"), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case topic := <-got:
		if topic != "c/marker" {
			t.Errorf("the new crash-1 received %s, subscribed by the crashed session", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the marker did not arrive")
	}
}
