package coord

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/media"
)

// A coordinator that takes over from one that died adopts the agents that
// still heartbeat and the recordings they report, which end whole; a
// recording no agent reports within AdoptAfter ends interrupted, its event
// partial; a stream it cannot adopt is stopped at its agent.
func TestANewLeaderAdoptsWhatStillRuns(t *testing.T) {
	r := newRigWith(t, conf.Agents{Capacity: 3, Max: 5}, &memRuntime{exits: map[string]func(error){}, started: make(chan string, 100)},
		func(c *Config) { c.AdoptAfter = 5 * time.Second })
	now := r.clock.Now()
	evA := detect.Event{ID: "evA", Site: "home", State: detect.EventRecording, Start: now.Add(-3 * time.Second)}
	evB := detect.Event{ID: "evB", Site: "home", State: detect.EventRecording, Start: now.Add(-3 * time.Second)}
	clipA := Clip{ID: "clipA", EventID: "evA", Site: "home", Camera: "cam1", Start: evA.Start, State: ClipRecording, Dir: "home/cam1/d/clipA", Segments: []string{"seg-01-old-1.mp4"}}
	clipB := Clip{ID: "clipB", EventID: "evB", Site: "home", Camera: "cam2", Start: evB.Start, State: ClipRecording, Dir: "home/cam2/d/clipB", Segments: []string{"seg-01-old-2.mp4"}}
	r.do(func() {
		r.c.orphans[clipA.Dir] = &orphan{clip: clipA, ev: &evA, until: now.Add(5 * time.Second)}
		r.c.orphans[clipB.Dir] = &orphan{clip: clipB, ev: &evB, until: now.Add(5 * time.Second)}
	})

	// old-1, an agent of the coordinator before, still records cam1, and
	// a live view it cannot adopt.
	r.do(func() {
		r.c.onHeartbeat("old-1", ingest.Heartbeat{Addr: "127.0.0.1:40000", Capacity: 3, Streams: []ingest.StreamStatus{
			{StreamID: "s1", Site: "home", Camera: "cam1", Dir: clipA.Dir},
			{StreamID: "live1", Site: "home", Camera: "cam3", LiveOnly: true},
		}}, net.IPv4(127, 0, 0, 1))
	})
	r.do(func() {
		a := r.c.agents["old-1"]
		st := r.c.byCamera[key("home", "cam1")]
		switch {
		case a == nil || a.status != agentReady || len(a.streams) != 1:
			t.Errorf("old-1 not adopted ready with its stream: %+v", a)
		case st == nil || st.id != "s1" || st.agent != a || st.clip.ID != "clipA" || st.state != streamLive:
			t.Errorf("cam1's stream: %+v", st)
		}
	})
	r.broker.mu.Lock()
	stopped := slices.ContainsFunc(r.broker.pubs, func(p string) bool {
		return strings.HasPrefix(p, "vigil/agents/old-1/cmd ") && strings.Contains(p, `"stream_id":"live1"`) && strings.Contains(p, `"stop"`)
	})
	r.broker.mu.Unlock()
	if !stopped {
		t.Error("the live view it cannot adopt was not stopped at old-1")
	}

	// cam2's agent died with the old leader's node: its clip waits, then ends.
	r.advance(4 * time.Second)
	r.want("clipB before AdoptAfter", r.saved("clipB").State, "")
	r.heartbeat() // nothing
	r.advance(2 * time.Second)
	b := r.saved("clipB")
	if !b.Interrupted || b.State == ClipRecording || b.State == "" {
		t.Errorf("clipB after AdoptAfter: %+v, want finishing, interrupted", b)
	}
	if ev := r.savedEvent("evB"); ev.State != detect.EventPartial || ev.End == nil {
		t.Errorf("evB: %+v, want partial", ev)
	}

	// cam1's recording ends at old-1 as usual: whole.
	r.do(func() {
		r.c.onSegment("old-1", ingest.SegmentReport{StreamID: "s1", State: ingest.SegmentDone, Reason: ingest.EndDuration, Frames: 300})
	})
	a := r.saved("clipA")
	if a.Interrupted || a.State == ClipRecording || a.State == "" {
		t.Errorf("clipA: %+v, want finished whole", a)
	}
	// A heartbeat of an agent this coordinator stopped adopts nothing.
	r.do(func() {
		r.c.gone["old-9"] = true
		r.c.onHeartbeat("old-9", ingest.Heartbeat{Addr: "127.0.0.1:40010"}, net.IPv4(127, 0, 0, 1))
		if r.c.agents["old-9"] != nil {
			t.Error("a stopped agent was adopted again")
		}
	})
}

// saved is a clip as the store has it, once the saver has written what was
// asked before.
func (r *rig) saved(id string) Clip {
	r.flush()
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	return r.store.clips[id]
}

func (r *rig) savedEvent(id string) detect.Event {
	r.flush()
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	return r.store.events[id]
}

// flush waits for the saver to write what it was asked to so far.
func (r *rig) flush() {
	done := make(chan struct{})
	r.do(func() { r.c.saves.add(func(context.Context) { close(done) }) })
	<-done
}

// A node that leads, steps down and leads again in one process makes a
// second coordinator on the same metrics registry.
func TestACoordinatorCanBeMadeAgainOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Agents: conf.Agents{Capacity: 3}, PlanFor: func(string) (string, conf.Plan) { return "", conf.Plan{} }, Tick: -1}
	for i := range 2 {
		c, err := New(cfg, &memBroker{}, &memStore{events: map[string]detect.Event{}, clips: map[string]Clip{}},
			&memRuntime{exits: map[string]func(error){}, started: make(chan string, 10)}, media.NewFinisher(), slog.New(slog.DiscardHandler), reg)
		if err != nil {
			t.Fatalf("coordinator %d: %v", i+1, err)
		}
		if err := c.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.Abandon()
	}
}

// refusingBroker refuses every subscription.
type refusingBroker struct{ memBroker }

func (*refusingBroker) Subscribe(string, func(string, []byte, string)) error {
	return errors.New("not authorized")
}

// Close after a Start that failed (the broker refused a subscription)
// returns; it used to wait for a loop that never ran.
func TestCloseAfterAFailedStartReturns(t *testing.T) {
	cfg := Config{Agents: conf.Agents{Capacity: 3}, PlanFor: func(string) (string, conf.Plan) { return "", conf.Plan{} }, Tick: -1}
	c, err := New(cfg, &refusingBroker{}, &memStore{events: map[string]detect.Event{}, clips: map[string]Clip{}},
		&memRuntime{exits: map[string]func(error){}, started: make(chan string, 10)}, media.NewFinisher(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err == nil {
		t.Fatal("Start succeeded with a broker that refuses subscriptions")
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after a failed Start")
	}
}
