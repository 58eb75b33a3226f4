package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	queueSize    = 256 // notifications waiting for the dispatcher
	maxInFlight  = 8   // deliveries running at once
	storeTimeout = 5 * time.Second
)

// Options configure a Notifier. The zero value is usable.
type Options struct {
	// BaseURL is prepended to a relative Notification.URL for ntfy, webhooks
	// and Web Push, e.g. "https://vigil.example.net".
	BaseURL string
	// HTTPClient sends ntfy, webhook and Web Push requests. nil: a client
	// with a 10 s timeout that does not follow redirects. Its transport
	// (nil or an *http.Transport) is copied with a dialer that applies the
	// outbound rules and no proxy.
	HTTPClient *http.Client
	// PushServices are the hosts Web Push subscriptions may use, "*.domain"
	// for any name under domain (notify.push_services). nil:
	// DefaultPushServices.
	PushServices []string
	// AllowTargets are addresses notifications may reach although they are
	// loopback, link-local, unspecified or multicast (notify.allow_targets).
	AllowTargets []netip.Prefix
	// Subscriber is the VAPID contact, "mailto:..." or "https://...".
	// Default "mailto:admin@localhost".
	Subscriber string
	// Retry are the delays between attempts: len(Retry)+1 attempts in all.
	// nil: 1s, 5s, 30s. A non-nil empty slice: one attempt.
	Retry []time.Duration
	// Now tells the time for cooldowns, quiet hours and the delivery log
	// (tests set it). nil: time.Now.
	Now func() time.Time
}

// Notifier sends notifications on the configured channels. Notify enqueues;
// a dispatcher goroutine applies each channel's rules and starts one
// delivery goroutine per matching channel (at most maxInFlight at once),
// which retries with backoff and records the outcome.
type Notifier struct {
	store  Store
	pub    Publisher
	log    *slog.Logger
	m      *metrics
	client *http.Client
	out    outbound
	opts   Options

	queue  chan queued
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the dispatcher and the deliveries
	sem    chan struct{}  // delivery slots

	startOnce, closeOnce sync.Once

	cooldowns map[string]time.Time // key -> end of its cooldown; owned by the dispatcher

	pending atomic.Int64 // notifications queued or being dispatched, and deliveries under way: for Drain

	toldMu sync.Mutex
	told   map[string]bool // events people were told of (EventSaved)

	vapidMu             sync.Mutex
	vapidPub, vapidPriv string
}

type queued struct {
	n        Notification
	now      time.Time // Options.Now at Notify: for quiet hours and cooldowns
	enqueued time.Time // the real time at Notify: for the latency
}

// New returns a Notifier; Start runs it. pub may be nil if no channel is of
// kind mqtt.
func New(store Store, pub Publisher, log *slog.Logger, reg prometheus.Registerer, opts Options) (*Notifier, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("notify metrics: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Subscriber == "" {
		opts.Subscriber = "mailto:admin@localhost"
	}
	if opts.Retry == nil {
		opts.Retry = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PushServices == nil {
		opts.PushServices = DefaultPushServices
	}
	out := outbound{allow: opts.AllowTargets}
	client, err := out.newClient(opts.HTTPClient)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Notifier{
		store: store, pub: pub, log: log, m: m, client: client, out: out, opts: opts,
		queue: make(chan queued, queueSize), ctx: ctx, cancel: cancel,
		sem: make(chan struct{}, maxInFlight), cooldowns: map[string]time.Time{},
	}, nil
}

// Start runs the dispatcher. Notifications sent before Start wait for it.
func (n *Notifier) Start() {
	n.startOnce.Do(func() {
		if n.ctx.Err() != nil {
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.run()
		}()
	})
}

// Close stops the Notifier and waits for its goroutines. Deliveries in
// progress or waiting to retry are abandoned and recorded as failed;
// notifications not yet dispatched are dropped.
func (n *Notifier) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		n.wg.Wait()
		if k := len(n.queue); k > 0 {
			n.m.dropped.Add(float64(k))
			n.log.Warn("notifications dropped at shutdown", "count", k)
		}
	})
	return nil
}

// Notify sends a notification on every enabled channel whose rules let it
// through. It never blocks: when the queue is full (256 notifications) or
// the Notifier is closed, the notification is dropped, counted and logged.
func (n *Notifier) Notify(note Notification) {
	now := n.opts.Now()
	if note.Time.IsZero() {
		note.Time = now
	}
	if n.ctx.Err() != nil {
		n.m.dropped.Inc()
		return
	}
	n.pending.Add(1)
	select {
	case n.queue <- queued{n: note, now: now, enqueued: time.Now()}:
	default:
		n.pending.Add(-1)
		n.m.dropped.Inc()
		n.log.Warn("notification dropped: queue full", "kind", note.Kind, "site", note.Site, "camera", note.Camera, "title", note.Title)
	}
}

// Drain waits until every notification sent so far is delivered or has
// failed (retries included), or until ctx ends. A command that exits after
// its last Notify calls it before Close.
func (n *Notifier) Drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for n.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Test sends a test notification on one channel, enabled or not, ignoring
// its rules, in one attempt; it records the delivery and returns its error.
func (n *Notifier) Test(ctx context.Context, channelID string) error {
	ch, err := n.store.GetChannel(ctx, channelID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	note := Notification{
		Kind: KindAlert, Site: ch.Site, Priority: 50, Time: n.opts.Now(), URL: "/",
		Title: "Vigil test notification",
		Body:  fmt.Sprintf("Notifications on channel %q work.", ch.Name),
	}
	return n.deliver(ctx, ch, note, time.Now(), 1, true)
}

// run is the dispatcher.
func (n *Notifier) run() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case q := <-n.queue:
			n.dispatch(q)
		}
	}
}

// dispatch applies every channel's rules to a notification and starts the
// deliveries.
func (n *Notifier) dispatch(q queued) {
	defer n.pending.Add(-1)
	note := q.n
	chans, err := n.store.ListChannels(n.ctx)
	if err != nil {
		if n.ctx.Err() == nil {
			n.m.dropped.Inc()
			n.log.Error("notification dropped: cannot read channels", "title", note.Title, "err", err)
		}
		return
	}
	now := q.now
	n.pruneCooldowns(now)
	for _, ch := range chans {
		if !ch.Enabled || !ch.accepts(&note) {
			continue
		}
		if note.Priority < ch.MinPriority {
			n.m.suppressed.WithLabelValues(suppressPriority).Inc()
			continue
		}
		if ch.QuietHours != "" && note.Priority < QuietOverride {
			qh, err := parseQuietHours(ch.QuietHours)
			if err != nil {
				// Sending is safer than silence.
				n.log.Warn("ignoring invalid quiet hours", "channel", ch.ID, "err", err)
			} else if qh.contains(now.In(time.Local)) {
				n.m.suppressed.WithLabelValues(suppressQuiet).Inc()
				n.log.Debug("notification held back: quiet hours", "channel", ch.ID, "title", note.Title)
				continue
			}
		}
		if cd := ch.cooldown(); cd > 0 {
			key := cooldownKey(ch.ID, &note)
			if until, ok := n.cooldowns[key]; ok && now.Before(until) {
				n.m.suppressed.WithLabelValues(suppressCooldown).Inc()
				n.log.Debug("notification held back: cooldown", "channel", ch.ID, "title", note.Title)
				continue
			}
			n.cooldowns[key] = now.Add(cd)
		}
		select {
		case n.sem <- struct{}{}:
		case <-n.ctx.Done():
			n.finish(n.ctx, ch, note, q.enqueued, 0, errShutdown)
			continue
		}
		n.wg.Add(1)
		n.pending.Add(1)
		go func() {
			defer func() { <-n.sem; n.pending.Add(-1); n.wg.Done() }()
			n.deliver(n.ctx, ch, note, q.enqueued, len(n.opts.Retry)+1, false)
		}()
	}
}

// pruneCooldowns forgets cooldowns that are over, once there are many.
func (n *Notifier) pruneCooldowns(now time.Time) {
	if len(n.cooldowns) < 1024 {
		return
	}
	for k, until := range n.cooldowns {
		if !now.Before(until) {
			delete(n.cooldowns, k)
		}
	}
}

var errShutdown = errors.New("abandoned at shutdown")

// delivery is one notification on one channel, across its attempts.
type delivery struct {
	id   string // X-Vigil-Delivery
	ch   Channel
	n    Notification // URL made absolute
	push *pushState   // webpush only
}

// deliver sends a notification on a channel in up to maxAttempts attempts,
// then records, counts and logs the outcome, which it returns. A Web Push
// channel nobody subscribed to is no failure, except in a test.
func (n *Notifier) deliver(ctx context.Context, ch Channel, note Notification, enqueued time.Time, maxAttempts int, test bool) error {
	note.URL = n.absURL(note.URL)
	d := &delivery{id: newID(), ch: ch, n: note}
	var err error
	attempts := 0
	for attempts < maxAttempts {
		if attempts > 0 {
			t := time.NewTimer(n.opts.Retry[attempts-1])
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			if ctx.Err() != nil {
				break
			}
		}
		attempts++
		err = n.send(ctx, d)
		if err == nil || isPermanent(err) || ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, errNobodySubscribed) && !test {
		n.log.Debug("notification not sent: no browser is subscribed", "channel", ch.ID, "title", note.Title)
		return nil
	}
	if err != nil && n.ctx.Err() != nil {
		err = fmt.Errorf("%w after %d attempts: %w", errShutdown, attempts, err)
	}
	n.finish(ctx, ch, note, enqueued, attempts, err)
	return err
}

// finish records, counts and logs a delivery's outcome.
func (n *Notifier) finish(ctx context.Context, ch Channel, note Notification, enqueued time.Time, attempts int, err error) {
	d := Delivery{ChannelID: ch.ID, Time: n.opts.Now(), Title: note.Title, Attempts: attempts, OK: err == nil}
	attrs := []any{"channel", ch.ID, "channel_name", ch.Name, "channel_kind", ch.Kind,
		"kind", note.Kind, "site", note.Site, "camera", note.Camera, "event", note.EventID, "attempts", attempts}
	if err != nil {
		d.Error = err.Error()
		n.m.deliveries.WithLabelValues(ch.Kind, "failed").Inc()
		n.log.Warn("notification failed", append(attrs, "err", d.Error)...)
	} else {
		latency := time.Since(enqueued)
		n.m.deliveries.WithLabelValues(ch.Kind, "ok").Inc()
		n.m.latency.WithLabelValues(ch.Kind).Observe(latency.Seconds())
		n.log.Info("notification sent", append(attrs, "latency", latency.Round(time.Millisecond))...)
	}
	// The delivery is recorded even when ctx was cancelled by Close.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := n.store.AddDelivery(sctx, &d); err != nil {
		n.log.Error("cannot record delivery", "channel", ch.ID, "err", err)
	}
}

// send makes one attempt.
func (n *Notifier) send(ctx context.Context, d *delivery) error {
	switch d.ch.Kind {
	case ChannelWebhook:
		return n.sendWebhook(ctx, d)
	case ChannelNtfy:
		return n.sendNtfy(ctx, d)
	case ChannelWebPush:
		return n.sendWebPush(ctx, d)
	case ChannelMQTT:
		return n.sendMQTT(d)
	}
	return permanent(fmt.Errorf("unknown channel kind %q", d.ch.Kind))
}

// absURL prepends BaseURL to a relative URL.
func (n *Notifier) absURL(u string) string {
	if u == "" || n.opts.BaseURL == "" || strings.Contains(u, "://") {
		return u
	}
	return strings.TrimSuffix(n.opts.BaseURL, "/") + "/" + strings.TrimPrefix(u, "/")
}

func newID() string {
	if u, err := uuid.NewV7(); err == nil {
		return u.String()
	}
	return uuid.NewString()
}

// permanentError is a failure that retrying will not fix (a 4xx answer, a
// bad configuration).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
