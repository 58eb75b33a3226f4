package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/ratelog"
)

// Store is what the pipeline needs to keep readings.
type Store interface {
	Apply(ctx context.Context, events []Event) error
	DeleteReadingsBefore(ctx context.Context, cutoff time.Time, chunk int) (int64, error)
	MarkStale(ctx context.Context, cutoff, now time.Time) ([]string, error)
}

// Config configures the pipeline.
type Config struct {
	Parser        Parser
	QueueSize     int
	BatchSize     int
	FlushInterval time.Duration
	Retention     time.Duration
	OfflineAfter  time.Duration // 0: never mark silent devices offline
	LogInterval   time.Duration
	// UnhealthyAfter is how long the store may fail every write before
	// Health reports it (0: 5 s).
	UnhealthyAfter time.Duration
}

// Pipeline receives device messages (Handle), validates them and writes
// them to the store in batches from one goroutine. A full queue blocks
// Handle, which slows the publisher down instead of dropping readings; a
// failing store is retried until it recovers or the pipeline closes.
type Pipeline struct {
	cfg   Config
	store Store
	log   *slog.Logger
	rlog  *ratelog.Logger
	m     *metrics

	mu     sync.RWMutex // held for reading while sending to queue; Close takes it to close queue
	closed bool
	queue  chan item

	stop    chan struct{}
	started chan struct{} // closed by Start: observers are all registered
	wg      sync.WaitGroup

	observers []func(Event)

	healthMu     sync.Mutex
	failingSince time.Time // the first of the store's failures in a row
	lastErr      error
}

// Health returns an error while the store has failed every write for
// Config.UnhealthyAfter: readings are held back, and publishers with them.
func (p *Pipeline) Health() error {
	after := p.cfg.UnhealthyAfter
	if after <= 0 {
		after = 5 * time.Second
	}
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	if p.failingSince.IsZero() || time.Since(p.failingSince) < after {
		return nil
	}
	return fmt.Errorf("storing readings has failed since %s (%s ago): %v", p.failingSince.UTC().Format(time.RFC3339),
		time.Since(p.failingSince).Round(time.Second), p.lastErr)
}

// storeFailed records the outcome of a write for Health.
func (p *Pipeline) storeFailed(err error) {
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	if err == nil {
		p.failingSince, p.lastErr = time.Time{}, nil
		return
	}
	if p.failingSince.IsZero() {
		p.failingSince = time.Now()
	}
	p.lastErr = err
}

// Observe registers f to see every valid event as soon as it is parsed,
// before it is queued to be stored: detection never waits for the
// database, however full the queue or stuck the disk. f runs on the
// publisher's goroutine (many at once) and must not block for long. Call
// Observe before Start: messages handled before it wait for it.
func (p *Pipeline) Observe(f func(Event)) {
	p.observers = append(p.observers, f)
}

// item is an event to store, or a barrier that Sync waits on. An event
// with done is one whose publisher waits until it is stored (Ingest): done
// gets nil once it is committed, an error if it never will be.
type item struct {
	ev      Event
	done    chan error
	barrier chan struct{}
}

// ErrClosed is returned for a message the pipeline did not take because
// it is closing.
var ErrClosed = errors.New("telemetry pipeline is closed")

// New returns a pipeline; call Start to run it.
func New(cfg Config, store Store, log *slog.Logger, reg prometheus.Registerer) (*Pipeline, error) {
	p := &Pipeline{
		cfg:   cfg,
		store: store,
		log:   log,
		rlog:  ratelog.New(log, cfg.LogInterval),
		queue: make(chan item, cfg.QueueSize),
		stop:  make(chan struct{}),

		started: make(chan struct{}),
	}
	m, err := newMetrics(reg, func() float64 { return float64(len(p.queue)) })
	if err != nil {
		return nil, err
	}
	p.m = m
	return p, nil
}

// Filters are the MQTT topic filters the pipeline wants.
func (p *Pipeline) Filters() []string {
	return []string{LegacyFilter, TelemetryFilter, StatusFilter, MotionFilter, MetaFilter}
}

// Start runs the writer and the housekeeping (retention, offline marking).
func (p *Pipeline) Start() {
	close(p.started)
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.writer() }()
	go func() { defer p.wg.Done(); p.housekeeping() }()
}

// Handle parses one message, shows it to the observers and queues it for
// storage. It blocks while the queue is full. It runs on the publishing
// client's goroutine, so parsing and detection happen on as many cores as
// there are publishers, never behind the writer.
func (p *Pipeline) Handle(topic string, payload []byte, clientID string) {
	_ = p.Ingest(context.Background(), topic, payload, clientID, false)
}

// Ingest queues one message for parsing and storage, like Handle. With
// wait, it returns only once the message is durably stored (its batch is
// committed: group commit, each publisher waiting for its own batch
// only), or is invalid and has nothing to store; an error means it is not
// stored: the pipeline is closing (ErrClosed), or ctx ended first (it may
// still be stored later). A broker acknowledges a message only after
// Ingest returned nil for it, so that an acknowledged reading is never
// lost to a crash.
func (p *Pipeline) Ingest(ctx context.Context, topic string, payload []byte, clientID string, wait bool) error {
	if !wait {
		_, err := p.queue1(ctx, topic, payload, clientID, false)
		return err
	}
	stored, err := p.IngestAsync(ctx, topic, payload, clientID)
	if err != nil {
		return err
	}
	select {
	case err := <-stored:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// IngestAsync queues one message like Ingest and returns once it is
// queued, in the order of the calls; the channel then tells when it is
// durably stored (nil) or will not be (an error). A subscriber of an
// external broker acknowledges each message when its channel says so,
// while it goes on taking the next ones. A message with nothing to store
// (invalid) is reported at once.
func (p *Pipeline) IngestAsync(ctx context.Context, topic string, payload []byte, clientID string) (<-chan error, error) {
	return p.queue1(ctx, topic, payload, clientID, true)
}

// Put shows an event made elsewhere (a reading of a device Vigil reads
// through Home Assistant discovery) to the observers and queues it, as a
// parsed message is; with wait, it returns once the event is stored.
func (p *Pipeline) Put(ctx context.Context, ev Event, wait bool) error {
	select {
	case <-p.started:
	case <-p.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	p.observe(ev)
	var done chan error
	if wait {
		done = make(chan error, 1)
	}
	if err := p.enqueue(ctx, item{ev: ev, done: done}); err != nil {
		return err
	}
	if !wait {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// queue1 parses and queues a message; with wait, the returned channel
// hears when it is stored.
func (p *Pipeline) queue1(ctx context.Context, topic string, payload []byte, clientID string, wait bool) (<-chan error, error) {
	received := time.Now()
	select {
	case <-p.started: // first, even when ctx has ended too
	default:
		select { // a broker may take messages before every observer is registered
		case <-p.started:
		case <-p.stop:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var done chan error
	if wait {
		done = make(chan error, 1)
	}
	ev, ok := p.parse(topic, payload, clientID, received)
	if !ok {
		if done != nil {
			done <- nil // counted and logged; nothing to store
		}
		return done, nil
	}
	if err := p.enqueue(ctx, item{ev: ev, done: done}); err != nil {
		return nil, err
	}
	return done, nil
}

// parse turns a message into an event, counting it either way, and shows
// it to the observers.
func (p *Pipeline) parse(topic string, payload []byte, clientID string, received time.Time) (Event, bool) {
	ev, err := p.cfg.Parser.Parse(topic, payload, clientID, received)
	if err != nil {
		p.reject(topic, clientID, err)
		return ev, false
	}
	p.observe(ev)
	return ev, true
}

// observe counts an event and shows it to the observers.
func (p *Pipeline) observe(ev Event) {
	kind := "status"
	switch {
	case ev.Reading != nil:
		kind = "reading"
	case ev.Meta != nil:
		kind = "meta"
	}
	p.m.received.WithLabelValues(kind).Inc()
	for _, f := range p.observers {
		f(ev)
	}
}

// reject counts a rejected message and logs it at most once per interval
// per reason.
func (p *Pipeline) reject(topic, clientID string, err error) {
	reason := ReasonMalformed
	var pe *ParseError
	if errors.As(err, &pe) {
		reason = pe.Reason
	}
	p.m.rejected.WithLabelValues(reason).Inc()
	p.rlog.Warn(reason, "telemetry message rejected", "reason", reason, "topic", topic, "client_id", clientID, "detail", err.Error())
}

// enqueue queues it, waiting while the queue is full, unless ctx ends
// first or the pipeline is closed.
func (p *Pipeline) enqueue(ctx context.Context, it item) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.m.rejected.WithLabelValues("shutdown").Inc()
		p.rlog.Warn("shutdown", "telemetry message refused: the pipeline is closing", "device", it.ev.DeviceID, "client_id", it.ev.ClientID)
		return ErrClosed
	}
	select {
	case p.queue <- it: // room now: taken, even when ctx has ended too
		return nil
	default:
	}
	select {
	case p.queue <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sync waits until everything handled before it is stored.
func (p *Pipeline) Sync(ctx context.Context) error {
	b := make(chan struct{})
	if err := p.enqueue(ctx, item{barrier: b}); err != nil {
		return err
	}
	select {
	case <-b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting messages, stores everything queued and waits for
// the pipeline's goroutines.
func (p *Pipeline) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.queue)
		close(p.stop)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// writer writes queued events in batches. A batch is
// written when it is full, FlushInterval after its first message, at a
// barrier, or, as soon as the queue is empty, when a publisher waits for
// one of its messages (group commit: whatever arrived while the previous
// batch was written goes in the next one, so batches grow with the load
// and a lone publisher waits for one write only). Under load, commits are
// at least commitSpacing apart (see there).
func (p *Pipeline) writer() {
	batch := make([]Event, 0, p.cfg.BatchSize)
	var barriers []chan struct{}
	var waiters []chan error
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var lastFlush time.Time
	spacing := time.NewTimer(time.Hour) // a flush waiting for commitSpacing
	spacing.Stop()
	spaced := false
	flush := func() {
		var err error
		if len(batch) > 0 {
			err = p.write(batch)
			batch = batch[:0]
			lastFlush = time.Now()
		}
		for _, w := range waiters {
			w <- err
		}
		waiters = waiters[:0]
		for _, b := range barriers {
			close(b)
		}
		barriers = barriers[:0]
		if spaced {
			spacing.Stop()
			spaced = false
		}
	}
	for {
		select {
		case it, ok := <-p.queue:
			if !ok {
				flush()
				return
			}
			if it.barrier != nil {
				barriers = append(barriers, it.barrier)
				flush()
				continue
			}
			if len(batch) == 0 {
				timer.Reset(p.cfg.FlushInterval)
			}
			batch = append(batch, it.ev)
			if it.done != nil {
				waiters = append(waiters, it.done)
			}
			if len(batch) >= p.cfg.BatchSize {
				flush()
			} else if len(waiters) > 0 && len(p.queue) == 0 && !spaced {
				if wait := commitSpacing - time.Since(lastFlush); wait > 0 {
					spacing.Reset(wait)
					spaced = true
				} else {
					flush()
				}
			}
		case <-spacing.C:
			spaced = false
			flush()
		case <-timer.C:
			flush()
		}
	}
}

// commitSpacing is the least time between two commits that publishers
// wait for. Each transaction costs SQLite about as much as storing a
// few dozen readings (taking its locks, writing the WAL's frames), and a
// fleet's readings trickle in: committing each time the queue ran empty
// made transactions of a handful of readings. A lone publisher, whose
// last commit is older than this, is not held back at all.
const commitSpacing = 2 * time.Millisecond

// write stores a batch, retrying with backoff while the store fails (a full
// disk, a locked database). While it retries, the queue fills and
// publishers are slowed down; nothing is dropped. Once the pipeline is
// closing it gives up after a bounded time, says how much was lost and
// returns why.
func (p *Pipeline) write(batch []Event) error {
	backoff := 100 * time.Millisecond
	var deadline time.Time
	for attempt := 1; ; attempt++ {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := p.store.Apply(ctx, batch)
		cancel()
		p.storeFailed(err)
		if err == nil {
			p.m.batchSeconds.Observe(time.Since(start).Seconds())
			n := 0
			for i := range batch {
				if r := batch[i].Reading; r != nil {
					n++
					p.m.latency.Observe(start.Sub(r.Time).Seconds())
				}
			}
			p.m.stored.Add(float64(n))
			if attempt > 1 {
				p.log.Info("telemetry store recovered", "attempts", attempt, "events", len(batch))
			}
			return nil
		}
		p.m.storeErrors.Inc()
		p.rlog.Warn("store", "telemetry store failed; retrying", "error", err, "events", len(batch), "attempt", attempt)
		select {
		case <-p.stop:
			if deadline.IsZero() {
				deadline = time.Now().Add(10 * time.Second)
			}
			if time.Now().After(deadline) {
				p.m.lost.Add(float64(len(batch)))
				p.log.Error("telemetry store still failing at shutdown; events lost", "events", len(batch), "error", err)
				return err
			}
		default:
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (p *Pipeline) housekeeping() {
	retention := time.NewTicker(10 * time.Minute)
	defer retention.Stop()
	staleEvery := time.Hour
	if p.cfg.OfflineAfter > 0 {
		staleEvery = min(max(p.cfg.OfflineAfter/4, time.Second), 30*time.Second)
	}
	stale := time.NewTicker(staleEvery)
	defer stale.Stop()
	p.expire()
	for {
		select {
		case <-p.stop:
			return
		case <-retention.C:
			p.expire()
		case <-stale.C:
			if p.cfg.OfflineAfter > 0 {
				p.markStale()
			}
		}
	}
}

func (p *Pipeline) expire() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n, err := p.store.DeleteReadingsBefore(ctx, time.Now().Add(-p.cfg.Retention), 5000)
	if err != nil {
		p.log.Warn("telemetry retention failed", "error", err)
		return
	}
	if n > 0 {
		p.log.Info("telemetry retention", "deleted", n, "older_than", p.cfg.Retention.String())
	}
}

func (p *Pipeline) markStale() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now()
	ids, err := p.store.MarkStale(ctx, now.Add(-p.cfg.OfflineAfter), now)
	if err != nil {
		p.log.Warn("marking silent devices offline failed", "error", err)
		return
	}
	if len(ids) > 0 {
		p.log.Info("devices offline: silent too long", "count", len(ids), "offline_after", p.cfg.OfflineAfter.String(), "first", ids[0])
	}
}
