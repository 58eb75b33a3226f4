package testpeer

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Session is an MQTT 5 client with a persistent session (an hour's
// session expiry) that records the payloads it receives, in order.
type Session struct {
	*paho.Client
	mu     sync.Mutex
	got    []string
	topics []string
}

// Resume connects client id to addr (host:port), anonymously, resuming
// its session unless clean. It reports whether the broker said a session
// was present. The client disconnects at the end of the test.
func Resume(t testing.TB, addr, id string, clean bool) (*Session, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := &Session{}
	s.Client = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(p paho.PublishReceived) (bool, error) {
			s.mu.Lock()
			s.got = append(s.got, string(p.Packet.Payload))
			s.topics = append(s.topics, p.Packet.Topic)
			s.mu.Unlock()
			return true, nil
		}}})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := s.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: clean,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Disconnect(&paho.Disconnect{}) })
	return s, ack.SessionPresent
}

// Received returns the payloads received so far.
func (s *Session) Received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// Topics returns the topics of the messages received so far.
func (s *Session) Topics() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.topics...)
}

// WaitReceived waits until s has n payloads, or for d, and returns what it
// has then (a moment later, so that one too many shows).
func (s *Session) WaitReceived(n int, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(s.Received()) >= n {
			time.Sleep(100 * time.Millisecond)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s.Received()
}
