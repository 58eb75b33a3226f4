package sim

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Sim is a simulation ready to run.
type Sim struct {
	sc      *Scenario
	log     *slog.Logger
	stats   *Stats
	devices []*device
	byFleet map[string][]*device
	tls     *tls.Config // every device's

	connErrLogged atomic.Bool

	applyMu  sync.Mutex
	applyRng *rand.Rand // for Apply
}

// New builds the fleet of a validated scenario: MACs, value generators and
// the connect ramp. It connects nothing yet.
func New(sc *Scenario, log *slog.Logger) (*Sim, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	s := &Sim{sc: sc, log: log, stats: newStats(sc.Devices()), byFleet: map[string][]*device{},
		applyRng: rand.New(rand.NewPCG(sc.Seed, 0x6170706c79))} // "apply"
	// One TLS configuration for every device (Validate checked the URLs).
	var err error
	if s.tls, err = mqttconn.TLSConfig(sc.TLS); err != nil {
		return nil, err
	}
	macs := newSeededMACs(sc.Seed)
	if sc.MACFromHost {
		if macs, err = newHostMACs(); err != nil {
			return nil, err
		}
	}
	ramp := time.Second / time.Duration(sc.ConnectRate)
	i := 0
	for fi := range sc.Fleets {
		f := &sc.Fleets[fi]
		for range f.Count {
			rng := rand.New(rand.NewPCG(sc.Seed, uint64(i)+1))
			d := &device{
				id:       macs.take().String(),
				sensorID: legacySensorID(i),
				fleet:    f,
				sim:      s,
				rng:      rng,
				gen:      newValueGen(f.Model, rng),
				startAt:  time.Duration(i) * ramp,
			}
			if f.Type == TypeCamera {
				d.camera = newCamera(d, f.Camera, log)
			}
			s.devices = append(s.devices, d)
			s.byFleet[f.Name] = append(s.byFleet[f.Name], d)
			i++
		}
	}
	return s, nil
}

// Stats returns the live counters.
func (s *Sim) Stats() *Stats { return s.stats }

// DeviceIDs returns the MAC-derived ids of the devices, in fleet order.
func (s *Sim) DeviceIDs() []string {
	ids := make([]string, len(s.devices))
	for i, d := range s.devices {
		ids[i] = d.id
	}
	return ids
}

// Run runs the simulation until ctx ends or the scenario's duration has
// passed, then disconnects every device cleanly and returns.
func (s *Sim) Run(ctx context.Context) error {
	if s.sc.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.sc.Duration)
		defer cancel()
	}
	s.stats.start = time.Now()
	var wg sync.WaitGroup
	for _, d := range s.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.run(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.timeline(ctx)
	}()
	wg.Wait()
	return nil
}

// timeline applies the scenario's steps at their times (again every
// Every, for repeating steps).
func (s *Sim) timeline(ctx context.Context) {
	start := time.Now()
	rng := rand.New(rand.NewPCG(s.sc.Seed, 0x74696d65)) // "time"
	type due struct {
		at   time.Time
		step int
	}
	var plan []due
	for i, st := range s.sc.Timeline {
		plan = append(plan, due{start.Add(st.At), i})
	}
	for len(plan) > 0 {
		slices.SortFunc(plan, func(a, b due) int { return a.at.Compare(b.at) })
		next := plan[0]
		plan = plan[1:]
		select {
		case <-time.After(time.Until(next.at)):
		case <-ctx.Done():
			return
		}
		st := s.sc.Timeline[next.step]
		n := s.apply(rng, st)
		s.log.Info("timeline", "step", next.step, "action", st.Action, "devices", n, "for", st.Duration.String())
		if st.Every > 0 {
			plan = append(plan, due{next.at.Add(st.Every), next.step})
		}
	}
}

// Apply runs a timeline step now (its At and Every are ignored), on a
// random Fraction of its fleet; it returns how many devices it touched.
// A running simulation can so be driven by hand: an intrusion when a
// test or a demo wants one.
func (s *Sim) Apply(st Step) int {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.apply(s.applyRng, st)
}

func (s *Sim) apply(rng *rand.Rand, st Step) int {
	targets := s.devices
	if st.Fleet != "" {
		targets = s.byFleet[st.Fleet]
	}
	n := int(float64(len(targets))*st.Fraction + 0.5)
	now := time.Now()
	for _, j := range rng.Perm(len(targets))[:n] {
		targets[j].apply(st.Action, now, st.Duration, st.DistanceM)
	}
	return n
}

// connectError logs the first connection failure at warning level; the
// rest are counted in Stats.ConnectErrors.
func (s *Sim) connectError(id string, err error) {
	if s.connErrLogged.CompareAndSwap(false, true) {
		s.log.Warn("device could not connect (further failures are counted, not logged)", "device", id, "error", err)
	} else {
		s.log.Debug("connect failed", "device", id, "error", err)
	}
}
