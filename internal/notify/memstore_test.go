package notify_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/notify"
)

// A Notifier on a MemStore (what vigil watch uses) delivers, retries, and
// Drain returns only once the retried delivery is done.
func TestDrainWaitsForRetriesOnAMemStore(t *testing.T) {
	rc := newReceiver(t, func(n int, _ request) int {
		if n < 3 {
			return 503
		}
		return 200
	})
	st := notify.NewMemStore()
	ctx := context.Background()
	hook := notify.Channel{Kind: notify.ChannelWebhook, Name: "hook", Enabled: true, URL: rc.URL + "/hook", Secret: "s3cret"}
	must(t, st.SaveChannel(ctx, &hook))
	if err := st.SaveChannel(ctx, &notify.Channel{Kind: notify.ChannelWebhook, Name: "bad", URL: "ftp://x"}); err == nil {
		t.Error("a MemStore saved an invalid channel")
	}
	n, err := notify.New(st, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry(),
		notify.Options{Retry: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}, AllowTargets: notify.AnyTarget}) // as vigil watch
	must(t, err)
	n.Start()
	defer n.Close()

	n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "Broker a is down", Priority: 80})
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	must(t, n.Drain(dctx))
	if got := rc.count("/hook"); got != 3 {
		t.Fatalf("Drain returned after %d requests, want 3 (two failed attempts and one that worked)", got)
	}
	ds, err := st.ListDeliveries(ctx, hook.ID, 10)
	must(t, err)
	if len(ds) != 1 || !ds[0].OK || ds[0].Attempts != 3 || ds[0].ID == 0 {
		t.Fatalf("deliveries %+v, want one that worked after 3 attempts", ds)
	}
	if sig := rc.requests("/hook")[2].Header.Get(notify.HeaderSignature); sig == "" {
		t.Error("the webhook is not signed")
	}

	// Nothing sent: Drain returns at once.
	quick, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	must(t, n.Drain(quick))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
