package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/measure"
	"github.com/vigilhq/vigil/internal/sim"
)

type simFlags struct {
	connFlags
	scenario, typ, site, logLevel               string
	devices, qos, connectRate                   int
	period, duration                            time.Duration
	seed                                        uint64
	macFromHost, legacy, jsonOut, quiet, retain bool
}

var simCommand = &command{
	name:    "sim",
	summary: "simulate a fleet of MQTT devices (1 to 100,000)",
	usage:   "sim [flags]",
	help: `
Runs simulated devices, each a real MQTT 5 client with its own connection,
reconnect with backoff, failover across --broker URLs and a last will. Client
and device ids are MAC-derived: locally administered MACs drawn from --seed,
or the host NIC's MAC plus an index (--mac-from-host), as in the paper.

Devices publish JSON readings on vigil/<site>/<id>/telemetry (with an RFC 3339
timestamp and a seq counter) and a retained online/offline status on
vigil/<site>/<id>/status. --legacy publishes the paper's topic
(sensors/<type>) and payload byte for byte instead.

Types: temperature (the paper's: uniform 10-35 Celsius, 2 decimals, every 5 s),
humidity, distance (IR sensor, metres), door (contact, 1 open). A --scenario
YAML file describes several fleets, value models (uniform, walk, sine,
binary), random faults (spikes, drop-outs, stuck values, disconnects) and a
timeline (for example a disconnect storm); flags given with it override its
global settings. See docs/simulator.md.

Live counters print every second; a summary prints at the end (--json for
scripts). Ctrl-C stops it cleanly.`,
	examples: `  vigil sim                                     # one temperature sensor, every 5 s
  vigil sim --devices 100 --type humidity --site greenhouse --period 2s
  vigil sim --legacy --qos 0                    # the paper's simulator, exactly
  vigil sim --devices 10000 --period 1s --duration 60s --json
  vigil sim --broker mqtt://10.0.0.5:1883,mqtt://10.0.0.6:1883 --username dev --password secret
  vigil sim --scenario examples/scenario.yaml`,
	flags: func(fs *flag.FlagSet) any {
		f := &simFlags{}
		fs.StringVar(&f.scenario, "scenario", "", "scenario YAML file (fleets, faults, timeline)")
		fs.IntVar(&f.devices, "devices", 1, "number of devices")
		fs.StringVar(&f.typ, "type", "temperature", "device type: "+strings.Join(sim.Types, ", "))
		fs.StringVar(&f.site, "site", "sim", "site the devices belong to")
		fs.DurationVar(&f.period, "period", 0, "time between readings (default: the type's, 5s for temperature)")
		fs.DurationVar(&f.duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
		f.connFlags.register(fs)
		fs.IntVar(&f.qos, "qos", 1, "QoS of readings: 0, 1 or 2")
		fs.BoolVar(&f.retain, "retain", false, "publish readings retained")
		fs.Uint64Var(&f.seed, "seed", 1, "seed for MACs and values (same seed, same fleet)")
		fs.BoolVar(&f.macFromHost, "mac-from-host", false, "derive MACs from the host NIC's MAC plus an index")
		fs.BoolVar(&f.legacy, "legacy", false, "publish the paper's topic and payload byte for byte")
		fs.IntVar(&f.connectRate, "connect-rate", 1000, "new connections per second while starting")
		fs.BoolVar(&f.jsonOut, "json", false, "print the summary as JSON")
		fs.BoolVar(&f.quiet, "quiet", false, "no live counters")
		fs.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
		return f
	},
	run: runSim,
}

// simScenario builds the scenario from --scenario and the flags.
func simScenario(e *env, f *simFlags) (*sim.Scenario, error) {
	var sc *sim.Scenario
	if f.scenario != "" {
		var err error
		if sc, err = sim.LoadScenario(f.scenario); err != nil {
			return nil, err
		}
	} else {
		sc = sim.NewScenario()
		fl := sim.TypeDefaults(f.typ)
		fl.Type, fl.Name, fl.Site, fl.Count, fl.Retain = f.typ, f.typ, f.site, f.devices, f.retain
		if f.period > 0 {
			fl.Period = f.period
		}
		sc.Fleets = []sim.Fleet{fl}
	}
	// Global flags apply when given (or, without a scenario, always).
	given := func(name string) bool { return f.scenario == "" || e.set(name) }
	if given("broker") {
		sc.Brokers = strings.Split(f.brokers, ",")
	}
	if given("qos") {
		sc.QoS = f.qos
	}
	if given("duration") {
		sc.Duration = f.duration
	}
	if given("seed") {
		sc.Seed = f.seed
	}
	if given("connect-rate") {
		sc.ConnectRate = f.connectRate
	}
	if e.set("username") {
		sc.Username = f.username
	}
	if password := f.passwordOf(e); password != "" {
		sc.Password = password
	}
	if e.set("ca") {
		sc.TLS.CA = f.ca
	}
	if e.set("cert") {
		sc.TLS.Cert = f.cert
	}
	if e.set("key") {
		sc.TLS.Key = f.key
	}
	if e.set("insecure") {
		sc.TLS.Insecure = f.insecure
	}
	if e.set("mac-from-host") {
		sc.MACFromHost = f.macFromHost
	}
	if e.set("legacy") {
		sc.Legacy = f.legacy
	}
	sc.ApplyDefaults()
	if err := sc.Validate(); err != nil {
		return nil, usageError{err.Error()}
	}
	return sc, nil
}

func runSim(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*simFlags)
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	sc, err := simScenario(e, f)
	if err != nil {
		return err
	}
	log := newLogger(e.err, f.logLevel, "text")
	s, err := sim.New(sc, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.err, "simulating %d devices against %s (QoS %d)\n", sc.Devices(), strings.Join(sc.Brokers, ", "), sc.QoS)
	st := s.Stats()
	pctx, stopProgress := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if f.quiet {
			return
		}
		var prev int64
		prevAt := time.Now()
		measure.Progress(pctx, e.err, time.Second, func() string { return st.Line(&prev, &prevAt) })
	}()
	err = s.Run(ctx)
	stopProgress()
	<-done
	if err != nil {
		return err
	}
	sum := st.Summary()
	if f.jsonOut {
		return printJSON(e.out, sum)
	}
	fmt.Fprint(e.out, sum.String())
	return nil
}
