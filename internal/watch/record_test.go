package watch

import (
	"slices"
	"testing"
	"time"
)

func TestRecordRules(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	cfg := Config{Interval: time.Second, Latency: 100 * time.Millisecond, Window: time.Hour}
	// A probe per second: "u" up and fast, "s" up and slow, "d" down.
	for _, tc := range []struct {
		name, probes string
		want         []string
		up           bool
		uptime       float64
	}{
		{"a broker always up has no event", "uuuuu", nil, true, 100},
		{"one failed probe is an outage, one success its end", "uudduu", []string{"outage", "recovered"}, true, 60},
		{"an outage is reported once however long", "udddd", []string{"outage"}, false, 25},
		{"two outages are two", "udud", []string{"outage", "recovered", "outage"}, false, 200.0 / 3},
		{"one slow probe is no breach", "usuusu", nil, true, 100},
		{"two slow probes in a row are a breach, reported once", "ussssu", []string{"latency"}, true, 100},
		{"the breach ends after two fast probes", "ssusuu", []string{"latency", "latency_ok"}, true, 100},
		{"failed probes do not end a breach", "ssddss", []string{"latency", "outage", "recovered"}, true, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r record
			var got []string
			for i, c := range tc.probes {
				p := Probe{Target: "x", At: t0.Add(time.Duration(i) * time.Second), OK: c != 'd', RoundTripMS: 1}
				if c == 's' {
					p.RoundTripMS = 150
				}
				if c == 'd' {
					p.Error = "connection refused"
				}
				for _, e := range r.add(p, cfg).events {
					got = append(got, e.Kind)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("events %v, want %v", got, tc.want)
			}
			now := t0.Add(time.Duration(len(tc.probes)-1) * time.Second)
			s := r.status(now, cfg.Window)
			if s.Up != tc.up || s.Probes != len(tc.probes) || abs(s.UptimePercent-tc.uptime) > 1e-9 {
				t.Errorf("status %+v, want up %v uptime %.2f", s, tc.up, tc.uptime)
			}
		})
	}
}

func TestUptimeLooksOnlyAsFarBackAsTheWindow(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	cfg := Config{Window: 10 * time.Minute}
	var r record
	r.add(Probe{Target: "x", At: t0, Error: "refused"}, cfg)
	r.add(Probe{Target: "x", At: t0.Add(5 * time.Minute), OK: true}, cfg)
	if s := r.status(t0.Add(10*time.Minute), cfg.Window); s.UptimePercent != 50 || len(s.Outages) != 1 {
		t.Errorf("within the window: %+v", s)
	}
	if s := r.status(t0.Add(20*time.Minute), cfg.Window); s.UptimePercent != 100 || len(s.Outages) != 0 || s.Probes != 0 {
		t.Errorf("after the window: %+v", s)
	}
	if s := r.status(t0.Add(12*time.Minute), cfg.Window); s.UptimePercent != 70 {
		t.Errorf("the window cuts the outage: %.2f %%, want 70", s.UptimePercent)
	}
}

func abs(x float64) float64 { return max(x, -x) }
