package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	vigilpkg "github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/watch"
)

type watchFlags struct {
	connFlags
	interval, timeout, latency time.Duration
	count                      int
	jsonOut                    bool
	webhooks, ntfys            stringList
}

var watchCommand = &command{
	name:    "watch",
	summary: "probe MQTT brokers periodically: availability, outages, round-trip latency",
	usage:   "watch [flags] URL [URL...]",
	help: `
Probes each broker every --interval: it connects (CONNECT to CONNACK),
subscribes to a fresh topic under vigil-watch/, publishes one QoS 1 message
there and times its return (the round trip), and reads the broker's $SYS
load when it may. Every probe is bounded by --timeout.

A broker is down from its first failed probe to its next successful one, so
an outage shows within two intervals; round trips above --latency on two
probes in a row are a latency breach, until two probes are back under it.

It prints a line per round (each broker: up or down, round trip, uptime),
outages and breaches as they start and end, and a summary at the end:
uptime, outages with start and end, p50/p99 round trip. --json prints one
JSON line per probe and per event instead, then a status line per broker.
Ctrl-C ends it; the exit code is 1 if a broker was down at the end.

--webhook and --ntfy send an alert when a broker goes down or becomes slow
(a signed JSON POST, as vigil up's webhook channels send, or an ntfy
message); recoveries are printed, not sent. The webhook's HMAC key comes
from $VIGIL_WEBHOOK_SECRET, an ntfy access token from $VIGIL_NTFY_TOKEN.
Alerts still under way at the end get up to 10 s to go out.

URLs are mqtt://, mqtts://, ws:// or wss:// (a bare host:port is mqtt://).
The password may come from $VIGIL_MQTT_PASSWORD instead of --password.
'vigil up' can watch brokers too (see docs/watch.md).`,
	examples: `  vigil watch mqtt://127.0.0.1:1883
  # both brokers of one deployment, every 10 s, alarm above 200 ms:
  vigil watch --interval 10s --latency 200ms mqtt://10.0.0.5:1883 mqtt://10.0.0.6:1883
  vigil watch --count 3 --json --ca ca.pem --username monitor mqtts://broker.example:8883
  VIGIL_MQTT_PASSWORD=secret vigil watch --username monitor wss://broker.example/mqtt
  # alert a phone through ntfy and a webhook when a broker goes down:
  vigil watch --ntfy https://ntfy.sh/my-brokers --webhook https://hooks.example/vigil mqtt://10.0.0.5:1883`,
	flags: func(fs *flag.FlagSet) any {
		f := &watchFlags{}
		fs.DurationVar(&f.interval, "interval", watch.DefaultInterval, "time between probe rounds")
		fs.DurationVar(&f.timeout, "timeout", watch.DefaultTimeout, "time a probe may take")
		fs.DurationVar(&f.latency, "latency", 0, "a round trip above this is a latency breach (0: no limit)")
		fs.IntVar(&f.count, "count", 0, "stop after this many rounds (0: until Ctrl-C)")
		fs.StringVar(&f.username, "username", "", "MQTT username")
		fs.StringVar(&f.password, "password", "", "MQTT password (or $VIGIL_MQTT_PASSWORD)")
		fs.StringVar(&f.ca, "ca", "", "CA certificate (PEM) to verify a TLS broker")
		fs.BoolVar(&f.insecure, "insecure", false, "do not verify the broker's TLS certificate")
		fs.BoolVar(&f.jsonOut, "json", false, "one JSON line per probe and per event")
		fs.Var(&f.webhooks, "webhook", "POST alerts to this URL (repeatable; HMAC key from $VIGIL_WEBHOOK_SECRET)")
		fs.Var(&f.ntfys, "ntfy", "send alerts to this ntfy topic URL (repeatable; token from $VIGIL_NTFY_TOKEN)")
		return f
	},
	run: runWatch,
}

// watchOutput prints what `vigil watch` sees, from the rounds and from the
// watcher's events.
type watchOutput struct {
	w      io.Writer
	json   bool
	mu     sync.Mutex
	events []watch.Event // of the round under way
}

func (o *watchOutput) event(e watch.Event) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
}

// round prints a round's probes (or its line) and its events.
func (o *watchOutput) round(n int, at time.Time, probes []watch.Probe, sts []watch.Status) {
	o.mu.Lock()
	events := o.events
	o.events = nil
	o.mu.Unlock()
	if o.json {
		enc := json.NewEncoder(o.w)
		for i := range probes {
			enc.Encode(struct {
				Type string `json:"type"`
				*watch.Probe
			}{"probe", &probes[i]})
		}
		for i := range events {
			enc.Encode(struct {
				Type string `json:"type"`
				*watch.Event
			}{"event", &events[i]})
		}
		return
	}
	for _, e := range events {
		fmt.Fprintf(o.w, "%s %s %s: %s\n", e.At.Format(time.TimeOnly), strings.ToUpper(strings.ReplaceAll(e.Kind, "_", " ")), e.Target, e.Detail)
	}
	parts := make([]string, len(sts))
	for i, s := range sts {
		if s.Up {
			parts[i] = fmt.Sprintf("%s up %.1fms %.1f%%", s.Target, s.LastProbe.RoundTripMS, s.UptimePercent)
		} else {
			parts[i] = fmt.Sprintf("%s DOWN %.1f%%", s.Target, s.UptimePercent)
		}
	}
	fmt.Fprintf(o.w, "%s round %d  %s\n", at.Format(time.TimeOnly), n, strings.Join(parts, "  |  "))
}

// summary prints the status of every target at the end.
func (o *watchOutput) summary(sts []watch.Status) {
	if o.json {
		enc := json.NewEncoder(o.w)
		for i := range sts {
			enc.Encode(struct {
				Type string `json:"type"`
				*watch.Status
			}{"status", &sts[i]})
		}
		return
	}
	fmt.Fprintln(o.w)
	tw := tabwriter.NewWriter(o.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tstate\tuptime\tprobes\tp50 round trip\tp99 round trip\toutages")
	for _, s := range sts {
		state := "up"
		switch {
		case s.Probes == 0:
			state = "not probed"
		case !s.Up:
			state = "DOWN"
		}
		p50, p99 := "-", "-"
		if s.LatencyP50MS > 0 {
			p50, p99 = fmt.Sprintf("%.1f ms", s.LatencyP50MS), fmt.Sprintf("%.1f ms", s.LatencyP99MS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f%%\t%d\t%s\t%s\t%d\n", s.Target, state, s.UptimePercent, s.Probes, p50, p99, len(s.Outages))
	}
	tw.Flush()
	var lines []string
	for _, s := range sts {
		for _, out := range s.Outages {
			end := "still down"
			if out.End != nil {
				end = fmt.Sprintf("%s (%s)", out.End.Format(time.DateTime), out.End.Sub(out.Start).Round(time.Millisecond))
			}
			lines = append(lines, fmt.Sprintf("  %s  %s -> %s: %s", s.Target, out.Start.Format(time.DateTime), end, out.Reason))
		}
	}
	if len(lines) > 0 {
		fmt.Fprintf(o.w, "\nOutages:\n%s\n", strings.Join(lines, "\n"))
	}
}

func runWatch(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*watchFlags)
	switch {
	case len(args) == 0:
		return usagef("no broker URL to watch")
	case f.interval <= 0 || f.timeout <= 0:
		return usagef("--interval and --timeout must be above 0")
	case f.latency < 0 || f.count < 0:
		return usagef("--latency and --count must not be negative")
	}
	cfg := watch.Config{Interval: f.interval, Timeout: f.timeout, Latency: f.latency}
	for _, u := range args {
		cfg.Targets = append(cfg.Targets, watch.Target{URL: u, Username: f.username, Password: f.passwordOf(e), CAFile: f.ca, Insecure: f.insecure})
	}
	out := &watchOutput{w: e.out, json: f.jsonOut}
	alerts, err := newWatchAlerts(e, f)
	if err != nil {
		return err
	}
	defer alerts.close()
	w, err := watch.New(cfg, nil, func(ev watch.Event) { out.event(ev); alerts.send(ev) }, nil, nil)
	if err != nil {
		return usageError{strings.TrimPrefix(err.Error(), "watch: ")}
	}
	defer w.Close()
	fmt.Fprintf(e.err, "watching %s every %s\n", strings.Join(args, ", "), f.interval)

	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	for n := 1; f.count == 0 || n <= f.count; n++ {
		if n > 1 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		at := time.Now()
		probes := make([]watch.Probe, len(cfg.Targets))
		var wg sync.WaitGroup
		for i, t := range cfg.Targets {
			wg.Go(func() { probes[i], _ = w.ProbeNow(ctx, t.URL) })
		}
		wg.Wait()
		if ctx.Err() != nil {
			break // the round was cut short: its probes were not recorded
		}
		out.round(n, at, probes, w.Status())
	}
	w.Close()
	sts := w.Status()
	out.summary(sts)
	var down []string
	for _, s := range sts {
		if !s.Up && s.Probes > 0 {
			down = append(down, s.Target)
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("%d of %d brokers down at the end: %s", len(down), len(sts), strings.Join(down, ", "))
	}
	return nil
}

// watchAlerts sends outages and latency breaches to the --webhook and
// --ntfy channels, through the same notifier as vigil up's.
type watchAlerts struct {
	n      *notify.Notifier
	errOut io.Writer
}

func newWatchAlerts(e *env, f *watchFlags) (*watchAlerts, error) {
	if len(f.webhooks)+len(f.ntfys) == 0 {
		return &watchAlerts{}, nil
	}
	st := notify.NewMemStore()
	ctx := context.Background()
	count := map[string]int{}
	add := func(kind, url, secret string) error {
		// Named by kind and order: an ntfy topic URL is as good as a
		// password, and the name shows in failure messages.
		count[kind]++
		ch := notify.Channel{Kind: kind, Name: fmt.Sprintf("%s %d", kind, count[kind]), Enabled: true, URL: url, Secret: secret,
			Cooldown: -1} // the watcher already sends each outage once
		if err := st.SaveChannel(ctx, &ch); err != nil {
			return usagef("--%s %s: %v", kind, url, vigilpkg.ErrorMessage(err))
		}
		return nil
	}
	for _, u := range f.webhooks {
		if err := add(notify.ChannelWebhook, u, e.getenv("VIGIL_WEBHOOK_SECRET")); err != nil {
			return nil, err
		}
	}
	for _, u := range f.ntfys {
		if err := add(notify.ChannelNtfy, u, e.getenv("VIGIL_NTFY_TOKEN")); err != nil {
			return nil, err
		}
	}
	log := newLogger(e.err, "warn", "text") // failed deliveries only
	// The URLs come from the command line, not from a web user: any
	// address may be reached, this machine's included.
	n, err := notify.New(st, nil, log, prometheus.NewRegistry(), notify.Options{AllowTargets: notify.AnyTarget})
	if err != nil {
		return nil, err
	}
	n.Start()
	return &watchAlerts{n: n, errOut: e.err}, nil
}

// send notifies an outage or a latency breach.
func (a *watchAlerts) send(ev watch.Event) {
	if a.n == nil {
		return
	}
	switch ev.Kind {
	case watch.EventOutage:
		a.n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "Broker " + ev.Target + " is down", Body: ev.Detail, Priority: 90, Time: ev.At})
	case watch.EventLatency:
		a.n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "Broker " + ev.Target + " is slow", Body: ev.Detail, Priority: 70, Time: ev.At})
	}
}

// close gives alerts under way up to 10 s, then stops.
func (a *watchAlerts) close() {
	if a.n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if a.n.Drain(ctx) != nil {
		fmt.Fprintln(a.errOut, "vigil watch: alerts still under way after 10 s were abandoned")
	}
	a.n.Close()
}
