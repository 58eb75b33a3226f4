package watch

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Bounds on what a record keeps in memory, whatever the window.
const (
	maxSamples = 100_000
	maxOutages = 1_000
)

// sample is what a record keeps of a probe.
type sample struct {
	at   time.Time
	ok   bool
	rtMS float64
}

// record is a target's availability record; its owner locks it.
type record struct {
	samples []sample // probes within the window, oldest first
	first   time.Time
	up      bool
	since   time.Time
	last    *Probe
	outages []Outage // within the window, oldest first; the last may be open
	over    int      // probes in a row above the latency limit
	under   int      // probes in a row under it
	breach  bool
}

// change is what recording a probe changed.
type change struct {
	events        []Event
	outage        *Outage // a copy, to save: started or ended
	outageStarted bool
}

// load takes probes and outages from a store, oldest first: history to
// count and show, the last probe's state, and an outage still open to
// continue.
func (r *record) load(probes []Probe, outages []Outage) {
	for _, p := range probes {
		if r.first.IsZero() {
			r.first = p.At
		}
		r.samples = append(r.samples, sample{at: p.At, ok: p.OK, rtMS: p.RoundTripMS})
	}
	if n := len(probes); n > 0 {
		last := probes[n-1]
		r.last, r.up, r.since = &last, last.OK, r.first
	}
	r.outages = make([]Outage, 0, len(outages))
	for _, o := range outages {
		r.outages = append(r.outages, copyOutage(o))
	}
	sort.SliceStable(r.outages, func(i, j int) bool { return r.outages[i].Start.Before(r.outages[j].Start) })
	if n := len(r.outages); n > 0 {
		switch o := r.outages[n-1]; {
		case o.End == nil:
			r.since = o.Start
		case r.up && o.End.After(r.since):
			r.since = *o.End
		}
	}
}

// open returns the outage under way, or nil.
func (r *record) open() *Outage {
	if n := len(r.outages); n > 0 && r.outages[n-1].End == nil {
		return &r.outages[n-1]
	}
	return nil
}

// add records a probe and returns what changed: a target is down after one
// failed probe and up after one successful probe; a latency breach takes
// two slow probes in a row, and its end two fast ones.
func (r *record) add(p Probe, cfg Config) change {
	var ch change
	if r.first.IsZero() {
		r.first = p.At
	}
	r.samples = append(r.samples, sample{at: p.At, ok: p.OK, rtMS: p.RoundTripMS})
	last := p
	r.last = &last
	open := r.open()
	switch {
	case p.OK && open != nil:
		end := p.At
		open.End = &end
		o := copyOutage(*open)
		ch.outage = &o
		ch.events = append(ch.events, Event{Kind: EventRecovered, Target: p.Target, At: p.At,
			Detail: fmt.Sprintf("up again after %s (down since %s)", roundDuration(end.Sub(open.Start)), open.Start.Format(time.DateTime))})
		r.since = p.At
	case p.OK && (!r.up || r.since.IsZero()):
		r.since = p.At
	case !p.OK && open == nil:
		r.outages = append(r.outages, Outage{Target: p.Target, Start: p.At, Reason: p.Error})
		o := copyOutage(r.outages[len(r.outages)-1])
		ch.outage, ch.outageStarted = &o, true
		ch.events = append(ch.events, Event{Kind: EventOutage, Target: p.Target, At: p.At, Detail: p.Error})
		r.since = p.At
	}
	r.up = p.OK
	if p.OK && cfg.Latency > 0 {
		limit := float64(cfg.Latency) / float64(time.Millisecond)
		if p.RoundTripMS > limit {
			r.over, r.under = r.over+1, 0
		} else {
			r.over, r.under = 0, r.under+1
		}
		switch {
		case !r.breach && r.over >= 2:
			r.breach = true
			ch.events = append(ch.events, Event{Kind: EventLatency, Target: p.Target, At: p.At,
				Detail: fmt.Sprintf("round trip %.1f ms, above the %s limit on 2 probes in a row", p.RoundTripMS, cfg.Latency)})
		case r.breach && r.under >= 2:
			r.breach = false
			ch.events = append(ch.events, Event{Kind: EventLatencyOK, Target: p.Target, At: p.At,
				Detail: fmt.Sprintf("round trip %.1f ms, back under the %s limit", p.RoundTripMS, cfg.Latency)})
		}
	}
	r.prune(p.At.Add(-cfg.Window))
	return ch
}

// prune forgets probes and ended outages from before from, and the oldest
// beyond the memory bounds.
func (r *record) prune(from time.Time) {
	i := sort.Search(len(r.samples), func(i int) bool { return !r.samples[i].at.Before(from) })
	i = max(i, len(r.samples)-maxSamples)
	if i > 0 {
		r.samples = slices.Delete(r.samples, 0, i)
	}
	r.outages = slices.DeleteFunc(r.outages, func(o Outage) bool { return o.End != nil && o.End.Before(from) })
	if n := len(r.outages) - maxOutages; n > 0 {
		r.outages = slices.Delete(r.outages, 0, n)
	}
}

// status computes a target's status at now over the window.
func (r *record) status(now time.Time, window time.Duration) Status {
	s := Status{Up: r.up, Since: r.since, LatencyBreach: r.breach, Outages: []Outage{}}
	if r.last != nil {
		last := *r.last
		s.LastProbe = &last
	}
	from := now.Add(-window)
	var rts []float64
	for _, x := range r.samples {
		if x.at.Before(from) {
			continue
		}
		s.Probes++
		if x.ok {
			rts = append(rts, x.rtMS)
		}
	}
	slices.Sort(rts)
	s.LatencyP50MS, s.LatencyP99MS = quantile(rts, 0.5), quantile(rts, 0.99)
	for _, o := range r.outages {
		if o.End == nil || !o.End.Before(from) {
			s.Outages = append(s.Outages, copyOutage(o))
		}
	}
	s.UptimePercent = r.uptime(now, from)
	return s
}

// uptime is the share of the time watched since from (or since the first
// probe, if later) that the target was not in an outage; the state between
// probes is the last probe's.
func (r *record) uptime(now, from time.Time) float64 {
	if r.first.IsZero() {
		return 0
	}
	if r.first.After(from) {
		from = r.first
	}
	watched := now.Sub(from)
	if watched <= 0 {
		if r.up {
			return 100
		}
		return 0
	}
	var down time.Duration
	for _, o := range r.outages {
		end := now
		if o.End != nil {
			end = *o.End
		}
		start := o.Start
		if start.Before(from) {
			start = from
		}
		if end.After(start) {
			down += end.Sub(start)
		}
	}
	return math.Max(0, 100*(1-float64(down)/float64(watched)))
}

// quantile returns the nearest-rank quantile of sorted values (0 if none).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func copyOutage(o Outage) Outage {
	if o.End != nil {
		end := *o.End
		o.End = &end
	}
	return o
}

// roundDuration shortens a duration for people: 1.234s, 3m12s.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(10 * time.Millisecond)
	default:
		return d.Round(time.Second)
	}
}
