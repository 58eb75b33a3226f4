package sim

import (
	"math"
	"math/rand/v2"
	"time"
)

// valueGen produces one device's readings from its fleet's model, with the
// random faults applied.
type valueGen struct {
	m     Model
	rng   *rand.Rand
	cur   float64 // walk: current value
	phase float64 // sine: this device's phase, so that devices differ

	stuckUntil time.Time
	stuckValue float64
	spikeUntil time.Time
}

func newValueGen(m Model, rng *rand.Rand) *valueGen {
	g := &valueGen{m: m, rng: rng, phase: rng.Float64() * 2 * math.Pi}
	g.cur = m.Min + rng.Float64()*(m.Max-m.Min)
	return g
}

// next returns the value at time now.
func (g *valueGen) next(now time.Time) float64 {
	if now.Before(g.stuckUntil) {
		return g.stuckValue
	}
	var v float64
	m := g.m
	switch m.Kind {
	case "uniform": // Python's random.uniform(min, max)
		v = m.Min + g.rng.Float64()*(m.Max-m.Min)
	case "walk":
		g.cur += (g.rng.Float64()*2 - 1) * m.Step
		g.cur = math.Max(m.Min, math.Min(m.Max, g.cur))
		v = g.cur
	case "sine":
		t := float64(now.UnixNano()) / float64(m.Cycle)
		mid, amp := (m.Max+m.Min)/2, (m.Max-m.Min)/2
		v = mid + amp*math.Sin(2*math.Pi*t+g.phase) + (g.rng.Float64()*2-1)*amp*0.02
	case "binary":
		if g.rng.Float64() < m.P {
			v = 1
		}
	}
	if now.Before(g.spikeUntil) {
		v = g.spike()
	}
	return round(v, m.Decimals)
}

// spike returns an outlier: far above or below the model's range.
func (g *valueGen) spike() float64 {
	span := math.Max(g.m.Max-g.m.Min, 1)
	if g.rng.IntN(2) == 0 {
		return g.m.Max + span*(1+g.rng.Float64()*4)
	}
	return g.m.Min - span*(1+g.rng.Float64()*4)
}

func (g *valueGen) stick(now time.Time, d time.Duration, v float64) {
	g.stuckUntil, g.stuckValue = now.Add(d), v
}

// round rounds like Python's round(x, n) for the values sensors produce.
func round(v float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.RoundToEven(v*p) / p
}
