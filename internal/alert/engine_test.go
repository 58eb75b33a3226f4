package alert_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/notify"
)

// rig is an engine with one source whose alerts the test sets, a fake
// clock, and a record of what was notified and published.
type rig struct {
	t        *testing.T
	e        *alert.Engine
	now      time.Time
	holds    []alert.Alert
	notified []string
	changes  int
}

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func newRig(t *testing.T, st alert.State) *rig {
	r := &rig{t: t, now: t0}
	r.e = alert.NewEngine(context.Background(), alert.Config{
		State:   st,
		Notify:  func(a alert.Alert) { r.notified = append(r.notified, a.ID) },
		Changed: func([]alert.Alert) { r.changes++ },
		Now:     func() time.Time { return r.now },
	})
	r.e.Add(alert.SourceFunc(func(context.Context) []alert.Alert { return slices.Clone(r.holds) }))
	return r
}

// check advances the clock by d and checks.
func (r *rig) check(d time.Duration) {
	r.now = r.now.Add(d)
	r.e.Check(context.Background())
}

func (r *rig) since(id string) time.Time {
	for _, a := range r.e.List() {
		if a.ID == id {
			return a.Since
		}
	}
	r.t.Fatalf("no alert %s in %+v", id, r.e.List())
	return time.Time{}
}

var (
	agentLost = alert.New(alert.KindAgentLost, "agent-3", alert.Warning, "Agent agent-3 stopped answering", "")
	diskFull  = alert.New(alert.KindDisk, "clips", alert.Critical, "The clips disk is almost full", "2% free")
)

// A new alert is notified once, keeps the time it started while it holds,
// and goes when it clears; if it comes back, people are told again.
func TestAnAlertIsNotifiedOnceWhileItHolds(t *testing.T) {
	r := newRig(t, notify.NewMemStore())
	r.check(0)
	if r.changes != 0 || len(r.e.List()) != 0 {
		t.Fatalf("nothing holds: %d changes, list %+v", r.changes, r.e.List())
	}
	r.holds = []alert.Alert{agentLost}
	r.check(time.Second)
	r.check(5 * time.Second)
	r.check(5 * time.Second)
	if !slices.Equal(r.notified, []string{"agent_lost:agent-3"}) || r.changes != 1 {
		t.Fatalf("notified %v with %d changes, want it once", r.notified, r.changes)
	}
	if got := r.since(agentLost.ID); !got.Equal(t0.Add(time.Second)) {
		t.Errorf("since %v, want the first check that saw it (%v)", got, t0.Add(time.Second))
	}

	r.holds[0].Detail = "its streams moved"
	r.check(time.Second)
	if r.changes != 2 || len(r.notified) != 1 {
		t.Errorf("a new detail: %d changes (want 2), %d notifications (want 1)", r.changes, len(r.notified))
	}

	r.holds = nil
	r.check(time.Second)
	if len(r.e.List()) != 0 || r.changes != 3 {
		t.Fatalf("cleared: list %+v, %d changes", r.e.List(), r.changes)
	}
	r.holds = []alert.Alert{agentLost}
	r.check(time.Minute)
	if len(r.notified) != 2 {
		t.Errorf("the alert came back: notified %v, want twice", r.notified)
	}
	if got := r.since(agentLost.ID); !got.Equal(r.now) {
		t.Errorf("came back: since %v, want %v", got, r.now)
	}
}

// An alert that holds across a restart is not notified again and keeps
// the time it started; one that cleared while Vigil was stopped is
// forgotten, and notified if it comes back.
func TestAnAlertThatHoldsAcrossARestartIsNotNotifiedAgain(t *testing.T) {
	st := notify.NewMemStore()
	r := newRig(t, st)
	r.holds = []alert.Alert{agentLost, diskFull}
	r.check(0)
	if len(r.notified) != 2 {
		t.Fatalf("notified %v, want both", r.notified)
	}

	r2 := newRig(t, st) // the restart
	r2.now = t0.Add(time.Hour)
	r2.holds = []alert.Alert{diskFull}
	r2.check(0)
	if len(r2.notified) != 0 {
		t.Errorf("after the restart: notified %v again", r2.notified)
	}
	if got := r2.since(diskFull.ID); !got.Equal(t0) {
		t.Errorf("after the restart: since %v, want %v", got, t0)
	}
	if r2.changes != 1 {
		t.Errorf("after the restart: %d changes, want 1 (the UI learns of the list)", r2.changes)
	}

	r3 := newRig(t, st) // another restart: agent-3 cleared in between
	r3.holds = []alert.Alert{diskFull, agentLost}
	r3.check(0)
	if !slices.Equal(r3.notified, []string{"agent_lost:agent-3"}) {
		t.Errorf("an alert cleared before the last restart came back: notified %v, want it alone", r3.notified)
	}
}

// A silent alert (a failing notification channel) is listed but not
// notified; the list is most severe first, then oldest first.
func TestSilentAlertsAreListedNotNotifiedAndTheListIsBySeverity(t *testing.T) {
	r := newRig(t, notify.NewMemStore())
	failing := alert.New(alert.KindDelivery, "ch1", alert.Warning, "Notifications on phone are failing", "401")
	failing.Silent = true
	r.holds = []alert.Alert{failing}
	r.check(0)
	r.holds = append(r.holds, agentLost)
	r.check(time.Second)
	r.holds = append(r.holds, diskFull)
	r.check(time.Second)
	if !slices.Equal(r.notified, []string{agentLost.ID, diskFull.ID}) {
		t.Errorf("notified %v, want the agent and the disk, not the channel", r.notified)
	}
	var ids []string
	for _, a := range r.e.List() {
		ids = append(ids, a.ID)
	}
	if want := []string{diskFull.ID, failing.ID, agentLost.ID}; !slices.Equal(ids, want) {
		t.Errorf("list %v, want %v (critical, then warnings oldest first)", ids, want)
	}
}

// A check cut short by shutdown changes nothing: its sources did not all
// answer.
func TestACheckCutShortChangesNothing(t *testing.T) {
	st := notify.NewMemStore()
	r := newRig(t, st)
	r.holds = []alert.Alert{agentLost}
	r.check(0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.holds = nil
	r.e.Check(ctx)
	if len(r.e.List()) != 1 {
		t.Errorf("a cancelled check cleared the list: %+v", r.e.List())
	}
}

// Kick has Run check at once rather than at its next tick.
func TestKickChecksWithoutWaitingForTheTick(t *testing.T) {
	checked := make(chan struct{}, 10)
	e := alert.NewEngine(context.Background(), alert.Config{State: notify.NewMemStore(), Every: time.Hour})
	e.Add(alert.SourceFunc(func(context.Context) []alert.Alert { checked <- struct{}{}; return nil }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	e.Kick()
	select {
	case <-checked:
	case <-time.After(10 * time.Second):
		t.Error("a kick did not check")
	}
	cancel()
	<-done
}
