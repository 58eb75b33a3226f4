package alert

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
)

// State is where the engine keeps the alerts people were told of, so that
// an alert that still holds after a restart is not notified again.
type State interface {
	GetSetting(ctx context.Context, key string) (string, error) // vigil.ENotFound if unset
	SetSetting(ctx context.Context, key, value string) error
}

// stateKey is the setting the held alerts are stored under (id -> since).
const stateKey = "alerts_held"

// Config is what an Engine needs.
type Config struct {
	State State
	// Notify is called once for each new alert that is not Silent.
	Notify func(Alert)
	// Changed is called with the whole list after each change.
	Changed func([]Alert)
	// Every is how often Run checks; 0 means 5 s.
	Every time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Engine checks the sources and keeps the list of alerts that hold.
type Engine struct {
	cfg     Config
	sources []Source
	kick    chan struct{}

	check sync.Mutex // one Check at a time: each replaces the whole list

	mu   sync.Mutex
	list map[string]Alert
	held map[string]time.Time // as stored: id -> since
}

// NewEngine returns an engine that knows the alerts held when Vigil last
// stopped (an unreadable state is logged and treated as none).
func NewEngine(ctx context.Context, cfg Config) *Engine {
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, kick: make(chan struct{}, 1), list: map[string]Alert{}, held: map[string]time.Time{}}
	v, err := cfg.State.GetSetting(ctx, stateKey)
	if err != nil {
		if vigil.ErrorCode(err) != vigil.ENotFound {
			cfg.Log.Warn("read the alerts held before the restart", "error", err)
		}
		return e
	}
	if err := json.Unmarshal([]byte(v), &e.held); err != nil {
		cfg.Log.Warn("read the alerts held before the restart", "error", err)
		e.held = map[string]time.Time{}
	}
	return e
}

// Add adds sources; call it before Run.
func (e *Engine) Add(s ...Source) { e.sources = append(e.sources, s...) }

// Kick has Run check soon, without waiting for its next tick; it never
// blocks.
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run checks every Config.Every and after each Kick until ctx ends (call
// Check once first for the alerts at start).
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
		}
		e.Check(ctx)
	}
}

// List returns the alerts that hold, most severe and oldest first.
func (e *Engine) List() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, len(e.list)) // [] in JSON, not null
	out = slices.AppendSeq(out, maps.Values(e.list))
	slices.SortFunc(out, less)
	return out
}

// Check asks every source what holds and updates the list: a new alert is
// notified (unless it held before a restart), one that cleared goes, and
// Changed hears of any difference.
func (e *Engine) Check(ctx context.Context) {
	e.check.Lock()
	defer e.check.Unlock()
	now := e.cfg.Now()
	found := map[string]Alert{}
	for _, s := range e.sources {
		for _, al := range s.Alerts(ctx) {
			al.Since = now
			found[al.ID] = al
		}
	}
	if ctx.Err() != nil {
		return // sources cut short: what they said is not what holds
	}

	e.mu.Lock()
	var raised []Alert
	changed := len(found) != len(e.list)
	held := make(map[string]time.Time, len(found))
	for id, al := range found {
		if old, ok := e.list[id]; ok {
			al.Since = old.Since
			changed = changed || old.Detail != al.Detail || old.Title != al.Title || old.Level != al.Level
		} else if since, ok := e.held[id]; ok {
			al.Since = since // it held before a restart: people were told
			changed = true
		} else {
			raised = append(raised, al)
			changed = true
		}
		found[id] = al
		held[id] = al.Since
	}
	e.list = found
	save := !maps.EqualFunc(held, e.held, time.Time.Equal)
	e.held = held
	e.mu.Unlock()

	if save {
		b, _ := json.Marshal(held)
		if err := e.cfg.State.SetSetting(context.WithoutCancel(ctx), stateKey, string(b)); err != nil {
			e.cfg.Log.Warn("save the alerts that hold", "error", err)
		}
	}
	slices.SortFunc(raised, less)
	for _, al := range raised {
		e.cfg.Log.Warn("alert", "id", al.ID, "title", al.Title, "detail", al.Detail)
		if !al.Silent && e.cfg.Notify != nil {
			e.cfg.Notify(al)
		}
	}
	if changed && e.cfg.Changed != nil {
		e.cfg.Changed(e.List())
	}
}
