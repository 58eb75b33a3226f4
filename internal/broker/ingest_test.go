package broker

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/conf"
)

// openIngest opens a broker that hands vigil/+/+/telemetry to h.
func openIngest(t *testing.T, h IngestHandler) *Server {
	t.Helper()
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = "127.0.0.1:0", "", false
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir(), Ingest: h, IngestFilters: []string{"vigil/+/+/telemetry"}},
		roleUsers{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// publishAsync publishes at qos and returns a channel that gets the
// acknowledgement's reason code, or 0xff if none came before ctx ended.
func publishAsync(ctx context.Context, c *paho.Client, topic string, qos byte) chan byte {
	acked := make(chan byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(`{"value":1}`), QoS: qos})
		if err != nil || pr == nil {
			acked <- 0xff
			return
		}
		acked <- pr.ReasonCode
	}()
	return acked
}

// The PUBACK of a message Vigil stores leaves only once the message is
// stored; other topics are acknowledged as usual.
func TestAPubackWaitsUntilTheMessageIsStored(t *testing.T) {
	release := make(chan struct{})
	var waited atomic.Int32
	s := openIngest(t, func(ctx context.Context, topic string, _ []byte, _ string, wait bool) error {
		if wait {
			waited.Add(1)
			<-release
		}
		return nil
	})
	c, _, _ := connectAs(t, s, "dev-1", "")
	if code := <-publishAsync(context.Background(), c, "vigil/site/dev-1/status", 1); code != 0 {
		t.Fatalf("a message on another topic: PUBACK %#x", code)
	}
	acked := publishAsync(context.Background(), c, "vigil/site/dev-1/telemetry", 1)
	select {
	case code := <-acked:
		t.Fatalf("PUBACK %#x before the message was stored", code)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if code := <-acked; code != 0 {
		t.Errorf("PUBACK %#x once stored", code)
	}
	if waited.Load() != 1 {
		t.Errorf("the handler waited for %d messages, want 1", waited.Load())
	}
}

// A message that cannot be stored because the broker closes gets no
// acknowledgement: its client is disconnected and will send it again.
func TestAMessageNotStoredIsNotAcknowledged(t *testing.T) {
	held := make(chan struct{}, 1)
	s := openIngest(t, func(ctx context.Context, _ string, _ []byte, _ string, wait bool) error {
		if wait {
			select {
			case held <- struct{}{}:
			default:
			}
			<-ctx.Done() // the store never answers
			return ctx.Err()
		}
		return nil
	})
	c, _, _ := connectAs(t, s, "dev-1", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acked := publishAsync(ctx, c, "vigil/site/dev-1/telemetry", 1)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the message did not reach the handler")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("Close waits for ever for a store that does not answer")
	}
	// A PUBACK, had one been sent, came before the disconnection.
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the client of the message not stored was not disconnected")
	}
	cancel()
	if code := <-acked; code != 0xff {
		t.Errorf("PUBACK %#x for a message that was not stored", code)
	}
}
