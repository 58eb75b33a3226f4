package leader_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigilhq/vigil/internal/leader"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

const key = 4242

// node is an Elector that records when it leads.
type node struct {
	e      *leader.Elector
	cancel context.CancelFunc
	done   chan struct{}
	since  atomic.Int64 // unix ns it last began leading; 0 while it does not
	terms  atomic.Int32 // times it began leading
}

func startNode(t *testing.T, url string, leaders *atomic.Int32, most *atomic.Int32) *node {
	n := &node{e: leader.New(leader.Config{URL: url, Key: key}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		n.e.Run(ctx, func(ctx context.Context) {
			n.since.Store(time.Now().UnixNano())
			n.terms.Add(1)
			now := leaders.Add(1)
			for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
			}
			<-ctx.Done()
			leaders.Add(-1)
			n.since.Store(0)
		})
	}()
	t.Cleanup(func() { cancel(); <-n.done })
	return n
}

func (n *node) stop() { n.cancel(); <-n.done }

// One node of three leads; when it stops, another takes over, and never
// do two lead at once.
func TestOneNodeLeadsAndAnotherTakesOver(t *testing.T) {
	url := testpeer.NeedPostgres(t).NewDatabase(t)
	var leaders, most atomic.Int32
	nodes := []*node{startNode(t, url, &leaders, &most), startNode(t, url, &leaders, &most), startNode(t, url, &leaders, &most)}
	leaderOf := func() *node {
		for _, n := range nodes {
			if n.e.Leading() {
				return n
			}
		}
		return nil
	}
	testkit.WaitFor(t, 10*time.Second, "a leader", func() bool { return leaders.Load() == 1 })
	var takeovers []time.Duration
	for range 2 {
		old := leaderOf()
		stopped := time.Now()
		old.stop()
		nodes = slices.DeleteFunc(nodes, func(n *node) bool { return n == old })
		testkit.WaitFor(t, 10*time.Second, "a new leader", func() bool { return leaders.Load() == 1 && leaderOf() != nil })
		takeovers = append(takeovers, time.Duration(leaderOf().since.Load()-stopped.UnixNano()))
	}
	if most.Load() != 1 {
		t.Errorf("%d nodes led at once", most.Load())
	}
	t.Logf("takeover after a leader stopped: %v", takeovers)
}

// A leader whose database session ends (the database restarted, the
// network failed, an operator terminated it) stops leading; then one node
// leads again (the one that retries first: it may be the same).
func TestALeaderCutOffFromTheDatabaseStepsDown(t *testing.T) {
	url := testpeer.NeedPostgres(t).NewDatabase(t)
	var leaders, most atomic.Int32
	a := startNode(t, url, &leaders, &most)
	testkit.WaitFor(t, 10*time.Second, "a leads", func() bool { return a.e.Leading() })
	b := startNode(t, url, &leaders, &most)

	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var ended bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted`, key).Scan(&ended); err != nil || !ended {
		t.Fatalf("terminate the leader's session: %v %v", ended, err)
	}
	cut := time.Now()
	testkit.WaitFor(t, 5*time.Second, "a new term", func() bool { return a.terms.Load() == 2 || b.terms.Load() == 1 })
	testkit.WaitFor(t, 5*time.Second, "one leader", func() bool { return leaders.Load() == 1 })
	next := max(a.since.Load(), b.since.Load())
	t.Logf("a leader again %v after the leader's session ended (a's terms %d, b's %d)", time.Duration(next-cut.UnixNano()), a.terms.Load(), b.terms.Load())
}
