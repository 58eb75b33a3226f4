package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
)

func newPipeline(t *testing.T, st telemetry.Store, queue int) (*telemetry.Pipeline, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := telemetry.New(telemetry.Config{
		Parser:        telemetry.Parser{MaxPayload: 1024, LegacySite: "default", LegacyTZ: time.UTC},
		QueueSize:     queue,
		BatchSize:     50,
		FlushInterval: 10 * time.Millisecond,
		Retention:     time.Hour,
		LogInterval:   time.Minute,
	}, st, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(func() { p.Close() })
	return p, reg
}

// newWaitedPipeline starts a pipeline on st whose batches are written only
// when full or when a publisher waits for one (no flush interval), and
// closes it at the end of the test.
func newWaitedPipeline(t *testing.T, st telemetry.Store, queue, batch int) *telemetry.Pipeline {
	t.Helper()
	p, err := telemetry.New(telemetry.Config{
		Parser:    telemetry.Parser{MaxPayload: 1024, LegacySite: "default", LegacyTZ: time.UTC},
		QueueSize: queue, BatchSize: batch, FlushInterval: time.Hour, Retention: time.Hour, LogInterval: time.Minute,
	}, st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(func() { p.Close() })
	return p
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestBadPayloadsAreCountedAndValidOnesBehindThemAreStored(t *testing.T) {
	st := openStore(t)
	p, reg := newPipeline(t, st, 100)
	bad := [][2]string{
		{"vigil/s/d/telemetry", "not json"},
		{"vigil/s/d/telemetry", `{"value":"x"}`},
		{"vigil/s/d/telemetry", string(make([]byte, 5000))},
		{"sensors/a/b", `{"value":1}`},
	}
	const good = 500
	for i := range good {
		b := bad[i%len(bad)]
		p.Handle(b[0], []byte(b[1]), "c")
		p.Handle("vigil/site/dev"+fmt.Sprint(i%10)+"/telemetry", fmt.Appendf(nil, `{"value":%d,"seq":%d}`, i, i), "c")
	}
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountReadings(context.Background()); n != good {
		t.Errorf("stored %d readings, want %d", n, good)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vigil_telemetry_rejected_total Device messages rejected, by reason (oversized, malformed, invalid, unknown_topic, shutdown).
# TYPE vigil_telemetry_rejected_total counter
vigil_telemetry_rejected_total{reason="invalid"} 125
vigil_telemetry_rejected_total{reason="malformed"} 125
vigil_telemetry_rejected_total{reason="oversized"} 125
vigil_telemetry_rejected_total{reason="unknown_topic"} 125
# HELP vigil_telemetry_stored_total Readings written to the database.
# TYPE vigil_telemetry_stored_total counter
vigil_telemetry_stored_total 500
`), "vigil_telemetry_rejected_total", "vigil_telemetry_stored_total"); err != nil {
		t.Error(err)
	}
}

// flakyStore fails its first n writes, like a full disk that is then freed.
type flakyStore struct {
	telemetry.Store
	failures atomic.Int32
}

func (f *flakyStore) Apply(ctx context.Context, evs []telemetry.Event) error {
	if f.failures.Add(-1) >= 0 {
		return errors.New("disk I/O error (database or disk is full)")
	}
	return f.Store.Apply(ctx, evs)
}

func TestAFailingStoreLosesNothing(t *testing.T) {
	st := openStore(t)
	flaky := &flakyStore{Store: st}
	flaky.failures.Store(3)
	p, reg := newPipeline(t, flaky, 1000)
	for i := range 200 {
		p.Handle("vigil/s/d/telemetry", fmt.Appendf(nil, `{"value":%d}`, i), "c")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountReadings(ctx); n != 200 {
		t.Errorf("stored %d of 200 readings after the store recovered", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vigil_telemetry_store_errors_total Failed batch writes (each is retried).
# TYPE vigil_telemetry_store_errors_total counter
vigil_telemetry_store_errors_total 3
`), "vigil_telemetry_store_errors_total"); err != nil {
		t.Error(err)
	}
}

// gateStore blocks every write until released.
type gateStore struct {
	telemetry.Store
	gate chan struct{}
}

func (g *gateStore) Apply(ctx context.Context, evs []telemetry.Event) error {
	<-g.gate
	return g.Store.Apply(ctx, evs)
}

func TestAFullQueueHoldsThePublisherBackInsteadOfDropping(t *testing.T) {
	st := openStore(t)
	g := &gateStore{Store: st, gate: make(chan struct{})}
	p, _ := newPipeline(t, g, 5)
	var handled atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 100 {
			p.Handle("vigil/s/d/telemetry", fmt.Appendf(nil, `{"value":%d}`, i), "c")
			handled.Add(1)
		}
	}()
	// The writer holds one batch, the queue five more; the publisher must
	// then wait for the store.
	testkit.WaitFor(t, 5*time.Second, "five messages handled", func() bool { return handled.Load() >= 5 })
	// Not synchronisation: the time a Handle that did not block would
	// take to run ahead; the test is that the publisher does not.
	time.Sleep(50 * time.Millisecond)
	if n := handled.Load(); n >= 100 {
		t.Fatalf("all %d messages were handled while the store was blocked", n)
	}
	close(g.gate)
	wg.Wait()
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountReadings(context.Background()); n != 100 {
		t.Errorf("stored %d of 100", n)
	}
}

func TestCloseStoresWhatIsQueued(t *testing.T) {
	st := openStore(t)
	p, _ := newPipeline(t, st, 10000)
	for i := range 3000 {
		p.Handle("vigil/s/d/telemetry", fmt.Appendf(nil, `{"value":%d}`, i), "c")
	}
	p.Close()
	if n, _ := st.CountReadings(context.Background()); n != 3000 {
		t.Errorf("after Close %d of 3000 readings are stored", n)
	}
	p.Handle("vigil/s/d/telemetry", []byte(`{"value":1}`), "c") // must not panic or block
}

// countingStore counts the writes it is given.
type countingStore struct {
	telemetry.Store
	writes atomic.Int32
}

func (c *countingStore) Apply(ctx context.Context, evs []telemetry.Event) error {
	c.writes.Add(1)
	return c.Store.Apply(ctx, evs)
}

// Ingest with wait returns once the reading is in the database, and
// publishers waiting at once share writes (group commit) rather than
// waiting for the flush interval or for one write each.
func TestIngestReturnsOnceTheReadingIsStored(t *testing.T) {
	st := openStore(t)
	cs := &countingStore{Store: st}
	p := newWaitedPipeline(t, cs, 1000, 500)
	ctx := context.Background()
	// One publisher alone: stored at once, not after the flush interval.
	if err := p.Ingest(ctx, "vigil/s/lone/telemetry", []byte(`{"value":1}`), "c", true); err != nil {
		t.Fatal(err)
	}
	if rs, _ := st.ListReadings(ctx, telemetry.ReadingQuery{DeviceID: "lone", Limit: 10}); len(rs) != 1 {
		t.Fatalf("Ingest returned, %d readings stored", len(rs))
	}
	// An invalid message waits for nothing.
	if err := p.Ingest(ctx, "vigil/s/lone/telemetry", []byte(`not json`), "c", true); err != nil {
		t.Errorf("an invalid message: %v", err)
	}
	const n = 400
	before := cs.writes.Load()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := fmt.Sprintf("d%d", i)
			if err := p.Ingest(ctx, "vigil/s/"+dev+"/telemetry", fmt.Appendf(nil, `{"value":%d}`, i), "c", true); err != nil {
				t.Error(err)
				return
			}
			if rs, err := st.ListReadings(ctx, telemetry.ReadingQuery{DeviceID: dev, Limit: 1}); err != nil || len(rs) != 1 {
				t.Errorf("%s: Ingest returned before its reading was stored (%v)", dev, err)
			}
		}()
	}
	wg.Wait()
	if w := cs.writes.Load() - before; w >= n/2 {
		t.Errorf("%d publishers at once took %d writes", n, w)
	} else {
		t.Logf("%d publishers at once: %d writes", n, w)
	}
	p.Close()
	if err := p.Ingest(ctx, "vigil/s/late/telemetry", []byte(`{"value":1}`), "c", true); !errors.Is(err, telemetry.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// Observers (detection) see a message as it arrives, even while the
// database does not answer and the queue is full.
func TestObserversDoNotWaitForTheStore(t *testing.T) {
	st := openStore(t)
	g := &gateStore{Store: st, gate: make(chan struct{})}
	reg := prometheus.NewRegistry()
	p, err := telemetry.New(telemetry.Config{
		Parser:    telemetry.Parser{MaxPayload: 1024, LegacySite: "default", LegacyTZ: time.UTC},
		QueueSize: 5, BatchSize: 50, FlushInterval: 10 * time.Millisecond, Retention: time.Hour, LogInterval: time.Minute,
	}, g, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan telemetry.Event, 100)
	p.Observe(func(ev telemetry.Event) {
		if ev.DeviceID == "pir-1" {
			seen <- ev
		}
	})
	p.Start()
	defer func() { close(g.gate); p.Close() }()
	go func() { // the store hangs on the first batch (50 at most); the queue fills behind it
		for i := range 100 {
			p.Handle("vigil/s/d/telemetry", fmt.Appendf(nil, `{"value":%d}`, i), "c")
		}
	}()
	testkit.WaitFor(t, 5*time.Second, "the queue to be full", func() bool {
		return testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vigil_telemetry_queue_length Events waiting to be written.
# TYPE vigil_telemetry_queue_length gauge
vigil_telemetry_queue_length 5
`), "vigil_telemetry_queue_length") == nil
	})
	go p.Handle("vigil/s/pir-1/motion", []byte(`{"distance_m":0.4}`), "pir-1")
	select {
	case ev := <-seen:
		if ev.Reading == nil || ev.Reading.Value != 0.4 {
			t.Errorf("observed %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the motion reading was not observed while the store hung")
	}
}

// Health tells the truth: it reports a store that fails every write for
// UnhealthyAfter, with the error, and is well again once a write succeeds.
func TestHealthReportsAStoreThatKeepsFailing(t *testing.T) {
	st := openStore(t)
	flaky := &flakyStore{Store: st}
	flaky.failures.Store(1 << 30)
	p, err := telemetry.New(telemetry.Config{
		Parser:    telemetry.Parser{MaxPayload: 1024, LegacySite: "default", LegacyTZ: time.UTC},
		QueueSize: 100, BatchSize: 50, FlushInterval: 10 * time.Millisecond, Retention: time.Hour, LogInterval: time.Minute,
		UnhealthyAfter: 300 * time.Millisecond,
	}, flaky, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer p.Close()
	if err := p.Health(); err != nil {
		t.Fatalf("healthy at start: %v", err)
	}
	p.Handle("vigil/s/d/telemetry", []byte(`{"value":1}`), "c")
	testkit.WaitFor(t, 10*time.Second, "Health to report the failing store", func() bool { return p.Health() != nil })
	if err := p.Health(); err == nil || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("with every write failing: %v", err)
	}
	flaky.failures.Store(0) // the disk is freed
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Health(); err != nil {
		t.Errorf("after a write succeeded: %v", err)
	}
}

// doneWatcher is a context that tells when its Done channel is first
// asked for: before Start, Ingest asks for it as it starts waiting for
// Start (or for the context to end).
type doneWatcher struct {
	context.Context
	once  sync.Once
	asked chan struct{}
}

func (c *doneWatcher) Done() <-chan struct{} {
	c.once.Do(func() { close(c.asked) })
	return c.Context.Done()
}

// A message handled before Start (a broker opened before the pipeline's
// observers are all registered) waits for Start, and every observer sees
// it.
func TestMessagesBeforeStartWaitForEveryObserver(t *testing.T) {
	st := openStore(t)
	p, err := telemetry.New(telemetry.Config{
		Parser:    telemetry.Parser{MaxPayload: 1024, LegacySite: "default", LegacyTZ: time.UTC},
		QueueSize: 10, BatchSize: 10, FlushInterval: 10 * time.Millisecond, Retention: time.Hour, LogInterval: time.Minute,
	}, st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	done := make(chan error, 1)
	ctx := &doneWatcher{Context: context.Background(), asked: make(chan struct{})}
	go func() {
		done <- p.Ingest(ctx, "vigil/s/early/telemetry", []byte(`{"value":1}`), "c", true)
	}()
	select {
	case <-ctx.asked: // Ingest waits for Start
	case <-time.After(5 * time.Second):
		t.Fatal("Ingest, called before Start, did not begin to wait")
	}
	seen := make(chan string, 1)
	p.Observe(func(ev telemetry.Event) { seen <- ev.DeviceID })
	p.Start()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-seen:
		if id != "early" {
			t.Errorf("observed %s", id)
		}
	default:
		t.Error("an observer registered before Start did not see a message handled before it")
	}
}

// timedStore records when each write began and ended.
type timedStore struct {
	telemetry.Store
	mu         sync.Mutex
	begun, end []time.Time
	sizes      []int
}

func (s *timedStore) Apply(ctx context.Context, evs []telemetry.Event) error {
	t0 := time.Now()
	err := s.Store.Apply(ctx, evs)
	s.mu.Lock()
	s.begun, s.end, s.sizes = append(s.begun, t0), append(s.end, time.Now()), append(s.sizes, len(evs))
	s.mu.Unlock()
	return err
}

// A fleet's readings trickle in, each publisher waiting for its own: the
// commits they wait for are spaced, so that transactions hold many
// readings rather than the few that arrived while the last one was
// written; every reading is still stored before its publisher goes on.
func TestTricklingPublishersShareSpacedCommits(t *testing.T) {
	st := openStore(t)
	ts := &timedStore{Store: st}
	p := newWaitedPipeline(t, ts, 5000, 5000)
	ctx := context.Background()
	const n = 2000
	var wg sync.WaitGroup
	var stored atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Ingest(ctx, fmt.Sprintf("vigil/s/d%d/telemetry", i), fmt.Appendf(nil, `{"value":%d}`, i), "c", true); err != nil {
				t.Error(err)
				return
			}
			stored.Add(1)
		}()
		if i%20 == 0 {
			time.Sleep(100 * time.Microsecond) // a trickle, not a crowd
		}
	}
	wg.Wait()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	written := 0
	for _, n := range ts.sizes {
		written += n
	}
	if written != n || stored.Load() != n {
		t.Fatalf("%d publishers went on, %d readings written; want %d", stored.Load(), written, n)
	}
	if rs, _ := st.ListReadings(ctx, telemetry.ReadingQuery{DeviceID: "d1999", Limit: 2}); len(rs) != 1 {
		t.Errorf("the last publisher's reading: %d stored", len(rs))
	}
	for i := 1; i < len(ts.begun); i++ {
		if gap := ts.begun[i].Sub(ts.end[i-1]); gap < 2*time.Millisecond-100*time.Microsecond {
			t.Errorf("commit %d began %v after the one before ended; want 2 ms or more", i, gap)
		}
	}
	t.Logf("%d readings in %d transactions (sizes %v)", n, len(ts.sizes), ts.sizes)
}
