package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/measure"
	"github.com/vigilhq/vigil/internal/sub"
)

type subFlags struct {
	connFlags
	qos, count                     int
	duration                       time.Duration
	stats, jsonOut, quiet, verbose bool
}

var subCommand = &command{
	name:    "sub",
	summary: "subscribe to topics and print messages, or measure rate, latency and loss",
	usage:   "sub [flags] [FILTER...]",
	help: `
The paper's subscriber: subscribes to MQTT topic filters (default "vigil/#"
and "sensors/#") on any broker and prints each message as "topic payload".

With --stats it measures instead: message rate, end-to-end latency (from the
"timestamp" in device payloads to arrival; Vigil's devices send milliseconds)
and loss, duplicates and reordering (from their "seq" counters), printing
live counters and a report at the end (--json for scripts). Retained
messages are counted apart.`,
	examples: `  vigil sub                                   # everything the devices publish
  vigil sub 'sensors/temperature'             # the paper's topic
  vigil sub --stats --duration 60s 'vigil/+/+/telemetry'
  vigil sub --broker mqtts://broker.example:8883 --ca ca.pem --username viewer 'vigil/home/#'`,
	flags: func(fs *flag.FlagSet) any {
		f := &subFlags{}
		f.connFlags.register(fs)
		fs.IntVar(&f.qos, "qos", 1, "subscription QoS: 0, 1 or 2")
		fs.IntVar(&f.count, "count", 0, "stop after this many messages (0: no limit)")
		fs.DurationVar(&f.duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
		fs.BoolVar(&f.stats, "stats", false, "measure rate, latency and loss instead of printing messages")
		fs.BoolVar(&f.verbose, "verbose", false, "with --stats, print the messages too")
		fs.BoolVar(&f.jsonOut, "json", false, "with --stats, print the report as JSON")
		fs.BoolVar(&f.quiet, "quiet", false, "no live counters")
		return f
	},
	run: runSub,
}

func runSub(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*subFlags)
	filters := args
	if len(filters) == 0 {
		filters = []string{"vigil/#", "sensors/#"}
	}
	if f.qos < 0 || f.qos > 2 {
		return usagef("--qos %d is not 0, 1 or 2", f.qos)
	}
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	stats := sub.NewStats()
	var mu sync.Mutex // serialises output lines
	var n int
	handle := func(m sub.Message) {
		if f.stats {
			stats.Add(m)
		}
		mu.Lock()
		defer mu.Unlock()
		if f.count > 0 && n >= f.count {
			return // --count reached; more may arrive before the connection closes
		}
		if !f.stats || f.verbose {
			fmt.Fprintf(e.out, "%s %s\n", m.Topic, m.Payload)
		}
		if n++; f.count > 0 && n >= f.count {
			stop()
		}
	}
	connectCtx, cancelConnect := context.WithTimeout(ctx, 15*time.Second)
	s, err := sub.Subscribe(connectCtx, sub.Options{
		Brokers: strings.Split(f.brokers, ","), Filters: filters, QoS: f.qos,
		Username: f.username, Password: f.passwordOf(e), TLS: f.tls(),
	}, handle)
	cancelConnect()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.err, "subscribed to %s on %s\n", strings.Join(filters, ", "), f.brokers)
	if f.stats && !f.quiet {
		var prev int64
		prevAt := time.Now()
		measure.Progress(ctx, e.err, time.Second, func() string {
			now, got := time.Now(), stats.Received()
			rate := float64(got-prev) / now.Sub(prevAt).Seconds()
			prev, prevAt = got, now
			r := stats.Report()
			return fmt.Sprintf("received %d  msgs/s %.0f  p50 %.1fms  p99 %.1fms  lost %d", got, rate, r.Latency.P50ms, r.Latency.P99ms, r.Loss.Lost)
		})
	} else {
		<-ctx.Done()
	}
	s.Close()
	if f.stats {
		r := stats.Report()
		if f.jsonOut {
			return printJSON(e.out, r)
		}
		fmt.Fprint(e.out, r.String())
	}
	return nil
}
