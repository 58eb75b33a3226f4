package watch

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

func TestAStoppedBrokerIsDownWithinTwoIntervalsAndItsRecoveryIsRecorded(t *testing.T) {
	checkGoroutines(t)
	a := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	b := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	const interval, timeout = 200 * time.Millisecond, 2 * time.Second
	ev := newEvents()
	var logs testkit.Buffer
	w, err := New(Config{
		Targets:  []Target{{Name: "a", URL: mqttURL(a.Port)}, {Name: "b", URL: mqttURL(b.Port)}},
		Interval: interval, Timeout: timeout,
	}, nil, ev.add, testLogger(&logs), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	defer w.Close()
	testkit.WaitFor(t, 10*time.Second, "both brokers up", func() bool {
		st := w.Status()
		return st[0].Up && st[1].Up && st[0].Probes >= 2 && st[1].Probes >= 2
	})

	b.Stop()
	stopped := time.Now()
	down, arrived := ev.wait(t, EventOutage, "b", 10*time.Second)
	st := w.Status()[1]
	if st.Up || len(st.Outages) != 1 || st.Outages[0].End != nil {
		t.Fatalf("b after the stop: %+v", st)
	}
	start := st.Outages[0].Start
	t.Logf("detection (interval %s): outage start %s after the stop, event %s after the stop; reason %q",
		interval, start.Sub(stopped).Round(time.Millisecond), arrived.Sub(stopped).Round(time.Millisecond), st.Outages[0].Reason)
	// The failing probe starts at most an interval after the stop (2 to
	// leave room for a late tick), and ends within its timeout.
	if start.After(stopped.Add(2 * interval)) {
		t.Errorf("the outage starts %s after the stop, more than 2 intervals", start.Sub(stopped))
	}
	if arrived.After(stopped.Add(2*interval + timeout)) {
		t.Errorf("the outage event came %s after the stop, more than 2 intervals and a probe's timeout", arrived.Sub(stopped))
	}
	if !down.At.Equal(start) || down.Detail != st.Outages[0].Reason || !strings.Contains(down.Detail, "connection refused") {
		t.Errorf("outage event %+v, outage start %s", down, start)
	}

	b.Restart()
	restarted := time.Now()
	up, arrived := ev.wait(t, EventRecovered, "b", 10*time.Second)
	t.Logf("recovery: event %s after the restart (%s)", arrived.Sub(restarted).Round(time.Millisecond), up.Detail)
	// One more round, so that a's record also covers the whole outage.
	n := w.Status()[0].Probes
	testkit.WaitFor(t, 10*time.Second, "another probe of a", func() bool { return w.Status()[0].Probes > n })
	w.Close()

	all := w.Status()
	if sa := all[0]; !sa.Up || sa.UptimePercent != 100 || len(sa.Outages) != 0 || sa.LatencyP50MS <= 0 || sa.LatencyP99MS < sa.LatencyP50MS {
		t.Errorf("a: %+v", sa)
	}
	sb := all[1]
	if !sb.Up || len(sb.Outages) != 1 || sb.Outages[0].End == nil || !sb.Outages[0].End.Equal(up.At) || sb.UptimePercent >= 100 || sb.UptimePercent <= 0 {
		t.Errorf("b: %+v", sb)
	}
	t.Logf("uptime: a %.2f %%, b %.2f %% (outage %s)", all[0].UptimePercent, sb.UptimePercent, sb.Outages[0].End.Sub(sb.Outages[0].Start).Round(time.Millisecond))
	if got := ev.all(); !slices.Equal(got, []string{"outage b", "recovered b"}) {
		t.Errorf("events %v, want one outage and one recovery of b", got)
	}
	if got := value(t, w.metrics.outages.WithLabelValues("b")); got != 1 {
		t.Errorf("vigil_watch_outages_total{target=b} = %v", got)
	}
	if got := value(t, w.metrics.probes.WithLabelValues("b", "failed")); got < 1 {
		t.Errorf("vigil_watch_probes_total{target=b,result=failed} = %v", got)
	}
	if got := value(t, w.metrics.up.WithLabelValues("a")); got != 1 {
		t.Errorf("vigil_watch_up{target=a} = %v", got)
	}
	if !hasLine(logs.String(), "WARN", "broker down") || !hasLine(logs.String(), "INFO", "broker up again") {
		t.Errorf("log:\n%s", logs.String())
	}
}

func TestALatencyBreachIsReportedOnceAndItsEndToo(t *testing.T) {
	checkGoroutines(t)
	// Without TCP_NODELAY, Mosquitto's PUBACK and the message back wait for
	// the client's delayed ACK (40 ms on Linux): not what this test delays.
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, Extra: "set_tcp_nodelay true"})
	proxy := startSlowProxy(t, fmt.Sprintf("127.0.0.1:%d", m.Port))
	ev := newEvents()
	w, err := New(Config{
		Targets:  []Target{{Name: "slow", URL: proxy.URL()}},
		Interval: 100 * time.Millisecond, Timeout: 3 * time.Second, Latency: 100 * time.Millisecond,
	}, nil, ev.add, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	defer w.Close()
	testkit.WaitFor(t, 10*time.Second, "3 fast probes", func() bool { return w.Status()[0].Probes >= 3 })
	if st := w.Status()[0]; st.LatencyBreach || !st.Up {
		t.Fatalf("before the delay: %+v", st)
	}

	proxy.setDelay(150 * time.Millisecond)
	e, _ := ev.wait(t, EventLatency, "slow", 20*time.Second)
	t.Logf("breach: %s", e.Detail)
	if st := w.Status()[0]; !st.LatencyBreach || st.LastProbe.RoundTripMS < 100 {
		t.Errorf("during the delay: %+v", st)
	}

	proxy.setDelay(0)
	e, _ = ev.wait(t, EventLatencyOK, "slow", 20*time.Second)
	t.Logf("end: %s", e.Detail)
	w.Close()
	if st := w.Status()[0]; st.LatencyBreach || st.UptimePercent != 100 {
		t.Errorf("after the delay: %+v", st)
	}
	if got := ev.all(); !slices.Equal(got, []string{"latency slow", "latency_ok slow"}) {
		t.Errorf("events %v", got)
	}
}

// memStore is a Store in memory that keeps every call.
type memStore struct {
	probes  []Probe
	saves   []Outage // every SaveOutage, in order
	outages []Outage // what ListOutages returns
	deletes int      // DeleteProbesBefore calls
}

func (s *memStore) SaveProbe(_ context.Context, p Probe) error {
	s.probes = append(s.probes, p)
	return nil
}

func (s *memStore) ListProbes(_ context.Context, target string, since time.Time, limit int) ([]Probe, error) {
	var out []Probe
	for _, p := range s.probes {
		if p.Target == target && !p.At.Before(since) && len(out) < limit {
			out = append(out, p)
		}
	}
	return out, nil
}

func (s *memStore) DeleteProbesBefore(_ context.Context, cutoff time.Time) error {
	s.probes = slices.DeleteFunc(s.probes, func(p Probe) bool { return p.At.Before(cutoff) })
	s.deletes++
	return nil
}

func (s *memStore) SaveOutage(_ context.Context, o *Outage) error {
	s.saves = append(s.saves, copyOutage(*o))
	return nil
}

func (s *memStore) ListOutages(_ context.Context, target string, since time.Time) ([]Outage, error) {
	var out []Outage
	for _, o := range s.outages {
		if o.Target == target && (o.End == nil || !o.End.Before(since)) {
			out = append(out, o)
		}
	}
	return out, nil
}

func TestTheStoreGetsTheOutageAtItsStartAndAgainWithItsEnd(t *testing.T) {
	checkGoroutines(t)
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	store := &memStore{}
	ev := newEvents()
	w, err := New(Config{Targets: []Target{{URL: mqttURL(m.Port)}}, Timeout: 2 * time.Second}, store, ev.add, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	name := mqttURL(m.Port) // the default name
	ctx := context.Background()
	probe := func(wantOK bool) {
		t.Helper()
		p, err := w.ProbeNow(ctx, name)
		if err != nil || p.OK != wantOK {
			t.Fatalf("probe: %+v %v", p, err)
		}
	}
	probe(true)
	m.Stop()
	probe(false)
	probe(false)
	m.Restart()
	probe(true)

	if len(store.probes) != 4 || store.probes[1].OK || !store.probes[3].OK {
		t.Errorf("saved probes %+v", store.probes)
	}
	if len(store.saves) != 2 {
		t.Fatalf("SaveOutage calls %+v, want 2", store.saves)
	}
	first, second := store.saves[0], store.saves[1]
	if first.End != nil || first.Target != name || !first.Start.Equal(store.probes[1].At) || first.Reason == "" {
		t.Errorf("first save %+v, want the start without an end", first)
	}
	if !second.Start.Equal(first.Start) || second.End == nil || !second.End.Equal(store.probes[3].At) {
		t.Errorf("second save %+v, want the same outage with its end", second)
	}
	if got := ev.all(); !slices.Equal(got, []string{"outage " + name, "recovered " + name}) {
		t.Errorf("events %v", got)
	}
	if _, err := w.ProbeNow(ctx, "nobody"); err == nil || !strings.Contains(err.Error(), `unknown target "nobody"`) {
		t.Errorf("unknown target: %v", err)
	}
}

func TestAnOutageStillOpenInTheStoreIsContinuedNotReportedAgain(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true})
	url := mqttURL(m.Port)
	began := time.Now().Add(-time.Minute)
	store := &memStore{outages: []Outage{{Target: "m", Start: began, Reason: "connection refused"}}}
	ev := newEvents()
	w, err := New(Config{Targets: []Target{{Name: "m", URL: url}}, Timeout: 2 * time.Second}, store, ev.add, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if st := w.Status()[0]; st.Up || len(st.Outages) != 1 || !st.Since.Equal(began) {
		t.Errorf("before a probe: %+v", st)
	}
	if _, err := w.ProbeNow(context.Background(), "m"); err != nil {
		t.Fatal(err)
	}
	if got := ev.all(); !slices.Equal(got, []string{"recovered m"}) {
		t.Errorf("events %v", got)
	}
	if len(store.saves) != 1 || !store.saves[0].Start.Equal(began) || store.saves[0].End == nil {
		t.Errorf("saves %+v", store.saves)
	}
}

func TestAProbeReadsEveryTransportAndTheBrokersLoad(t *testing.T) {
	checkGoroutines(t)
	cert := testpeer.SelfSigned(t, t.TempDir(), testpeer.CertOptions{})
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{Anonymous: true, TLS: &cert, WebSocket: true})
	targets := []Target{
		{Name: "tcp", URL: mqttURL(m.Port)},
		{Name: "tls", URL: fmt.Sprintf("mqtts://127.0.0.1:%d", m.TLSPort), CAFile: cert.CAFile},
		{Name: "ws", URL: fmt.Sprintf("ws://127.0.0.1:%d", m.WSPort)},
		{Name: "tls-unverified", URL: fmt.Sprintf("mqtts://localhost:%d", m.TLSPort)},
	}
	w, err := New(Config{Targets: targets, Timeout: 2 * time.Second}, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, tg := range targets {
		p, err := w.ProbeNow(context.Background(), tg.Name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", tg.Name, p)
		if tg.Name == "tls-unverified" {
			if p.OK || !strings.Contains(p.Error, "certificate") {
				t.Errorf("a self-signed certificate without --ca: %+v", p)
			}
			continue
		}
		if !p.OK || p.ConnectMS <= 0 || p.RoundTripMS <= 0 {
			t.Errorf("%s: %+v", tg.Name, p)
		}
		if _, ok := p.Sys["$SYS/broker/clients/connected"]; !ok {
			t.Errorf("%s: no $SYS load in %v", tg.Name, p.Sys)
		}
	}
}

func TestAHungBrokerCannotHoldAProbeOrClose(t *testing.T) {
	checkGoroutines(t)
	h := startHungBroker(t)
	ev := newEvents()
	w, err := New(Config{Targets: []Target{{Name: "hung", URL: h.URL()}}, Timeout: 300 * time.Millisecond, Interval: time.Hour}, nil, ev.add, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := w.ProbeNow(context.Background(), "hung")
	if err != nil || p.OK || !strings.Contains(p.Error, "no CONNACK within the timeout") {
		t.Errorf("probe of a hung broker: %+v %v", p, err)
	}
	if got := ev.all(); !slices.Equal(got, []string{"outage hung"}) {
		t.Errorf("events %v", got)
	}

	// A probe under way when Close is called is cut short and not counted.
	w2, err := New(Config{Targets: []Target{{Name: "hung", URL: h.URL()}}, Timeout: time.Minute, Interval: time.Hour}, nil, ev.add, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for len(h.accepted) > 0 {
		<-h.accepted
	}
	w2.Start()
	<-h.accepted
	closed := make(chan struct{})
	go func() { w2.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for a hung probe")
	}
	if st := w2.Status()[0]; st.Probes != 0 || len(ev.all()) != 1 {
		t.Errorf("a probe cut by Close was recorded: %+v %v", st, ev.all())
	}
	if _, err := w2.ProbeNow(context.Background(), "hung"); err != ErrClosed {
		t.Errorf("ProbeNow after Close: %v", err)
	}
	w.Close()
}

func TestNewRejectsBadConfigurations(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no target", Config{}, "no target"},
		{"a URL with another scheme", Config{Targets: []Target{{URL: "http://x"}}}, `scheme "http"`},
		{"the same name twice", Config{Targets: []Target{{URL: "mqtt://a:1"}, {URL: "mqtt://a:1"}}}, "given twice"},
		{"a CA file that does not exist", Config{Targets: []Target{{URL: "mqtts://a", CAFile: "/nonexistent"}}}, "/nonexistent"},
		{"a negative interval", Config{Targets: []Target{{URL: "a"}}, Interval: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, nil, nil, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// value reads a counter's or a gauge's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func TestAProbeSaysWhatTheBrokerRefused(t *testing.T) {
	m := testpeer.StartMosquitto(t, testpeer.MosquittoConfig{
		Users: map[string]string{"monitor": "monitor-password", "nobody": "nobody-password"},
		ACL:   "user monitor\ntopic readwrite vigil-watch/#\n\nuser nobody\ntopic read nothing/#\n",
	})
	for _, tc := range []struct {
		name, user, password, want string
	}{
		{"a wrong password", "monitor", "wrong", "broker refused the connection: "}, // Mosquitto 2.0.11 says Not authorized
		{"no right to the probe's topics", "nobody", "nobody-password", ": Not authorized (reason code 0x87)"},
		{"the right to the probe's topics but not $SYS", "monitor", "monitor-password", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := New(Config{Targets: []Target{{Name: "m", URL: mqttURL(m.Port), Username: tc.user, Password: tc.password}}, Timeout: 2 * time.Second}, nil, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			p, err := w.ProbeNow(context.Background(), "m")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", p)
			if tc.want == "" {
				if !p.OK || len(p.Sys) != 0 {
					t.Errorf("probe %+v, want OK without $SYS", p)
				}
			} else if p.OK || !strings.Contains(p.Error, tc.want) {
				t.Errorf("error %q, want %q", p.Error, tc.want)
			}
		})
	}
}

// A restarted watcher picks up its record from the store: the uptime and
// latency of the window still count the previous run's probes, and the
// store keeps no probe older than the window.
func TestARestartedWatcherKeepsItsUptimeAndTheStoreStaysBounded(t *testing.T) {
	now := time.Now()
	store := &memStore{}
	store.probes = append(store.probes, Probe{Target: "m", At: now.Add(-48 * time.Hour), OK: true, RoundTripMS: 1})
	for i := 60; i > 0; i-- { // a probe a minute for the last hour, down from -30 to -20 minutes
		at := now.Add(-time.Duration(i) * time.Minute)
		ok := i > 30 || i <= 20
		store.probes = append(store.probes, Probe{Target: "m", At: at, OK: ok, RoundTripMS: float64(i)})
	}
	outageEnd := now.Add(-20 * time.Minute)
	store.outages = []Outage{{Target: "m", Start: now.Add(-30 * time.Minute), End: &outageEnd, Reason: "connection refused"}}
	url := mqttURL(testpeer.FreePort(t)) // nobody answers there
	w, err := New(Config{Targets: []Target{{Name: "m", URL: url}}, Timeout: time.Second}, store, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	st := w.Status()[0]
	if st.Probes != 60 || !st.Up || !st.Since.Equal(outageEnd) || st.LastProbe == nil {
		t.Errorf("after a restart: %d probes, up %v since %v (want 60, up since %v), last %+v", st.Probes, st.Up, st.Since, outageEnd, st.LastProbe)
	}
	if st.UptimePercent < 82 || st.UptimePercent > 85 { // 10 of 60 minutes down
		t.Errorf("uptime %.2f %%, want about 83.3", st.UptimePercent)
	}
	if st.LatencyP50MS < 25 || st.LatencyP50MS > 40 {
		t.Errorf("p50 %.1f ms from the stored probes' round trips, want about 30", st.LatencyP50MS)
	}
	for range 2 {
		if _, err := w.ProbeNow(context.Background(), "m"); err != nil {
			t.Fatal(err)
		}
	}
	if store.deletes != 1 || store.probes[0].At.Before(now.Add(-25*time.Hour)) {
		t.Errorf("%d deletes (want 1 for 2 probes), oldest stored probe %v", store.deletes, store.probes[0].At)
	}
}
