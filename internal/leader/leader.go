// Package leader chooses one node among several to do what only one may
// (the coordinator), through a PostgreSQL advisory lock held on a
// connection of its own: the node whose session holds the lock leads. When
// that node dies its connection closes, PostgreSQL releases the lock, and
// the next node to try takes it. No election protocol of Vigil's own.
package leader

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Config is what an Elector needs.
type Config struct {
	// URL is the PostgreSQL database the nodes share.
	URL string
	// Key names the lock: nodes that compete for one role use one key.
	Key int64
	// Every is how often a follower tries to take the lock and a leader
	// checks that its connection (hence its lock) still stands; 0 means
	// 250 ms. It bounds both the time a new leader takes over and the time
	// a cut-off leader goes on believing it leads.
	Every time.Duration
	Log   *slog.Logger
}

// Elector competes for leadership until its context ends.
type Elector struct {
	cfg     Config
	leading atomic.Bool
}

// New returns an Elector; Run competes.
func New(cfg Config) *Elector {
	if cfg.Every <= 0 {
		cfg.Every = 250 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Elector{cfg: cfg}
}

// Leading reports whether this node leads now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Run competes for the lock until ctx ends. Each time it wins, lead runs
// with a context that ends when leadership is lost (the connection
// failed) or ctx ends; Run waits for lead to return before it competes
// again, so that a node never leads twice at once.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) {
	t := time.NewTicker(e.cfg.Every)
	defer t.Stop()
	for ctx.Err() == nil {
		won, conn := e.try(ctx)
		if won {
			e.hold(ctx, conn, lead)
		}
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			conn.Close(closeCtx) // a lock still held goes with the session
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// try connects and tries the lock once.
func (e *Elector) try(ctx context.Context) (bool, *pgx.Conn) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, e.cfg.URL)
	if err != nil {
		if ctx.Err() == nil {
			e.cfg.Log.Warn("leader election: cannot reach the database", "error", err)
		}
		return false, nil
	}
	var won bool
	if err := conn.QueryRow(cctx, `SELECT pg_try_advisory_lock($1)`, e.cfg.Key).Scan(&won); err != nil {
		if ctx.Err() == nil {
			e.cfg.Log.Warn("leader election: lock", "error", err)
		}
		return false, conn
	}
	return won, conn
}

// hold leads while the connection answers.
func (e *Elector) hold(ctx context.Context, conn *pgx.Conn, lead func(ctx context.Context)) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.leading.Store(true)
	e.cfg.Log.Info("leading")
	done := make(chan struct{})
	go func() { defer close(done); lead(lctx) }()
	t := time.NewTicker(e.cfg.Every)
	defer t.Stop()
	for lost := false; !lost; {
		select {
		case <-ctx.Done():
			lost = true
		case <-done:
			lost = true // lead gave up by itself
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, e.cfg.Every)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil && ctx.Err() == nil {
				e.cfg.Log.Warn("leadership lost: the database connection failed", "error", err)
				lost = true
			}
		}
	}
	cancel()
	<-done
	e.leading.Store(false)
}
