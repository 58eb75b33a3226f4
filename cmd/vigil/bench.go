package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigilhq/vigil/internal/bench"
)

type benchFlags struct {
	streams, runtime, image     string
	width, height, fps, quality int
	cameras, rounds             int
	every                       time.Duration
	target, vigil, profile      string
	nodes, database             string
	devices, qos                int
	period, duration            time.Duration
	jsonOut, subscriber         bool
	transcode                   bool
	rtspFile, rtspTransport     string
}

var benchCommand = &command{
	name:    "bench",
	summary: "measure a broker under a simulated fleet (Vigil, Mosquitto, or both)",
	usage:   "bench [flags]",
	help: `
Starts the target broker on a free loopback port (Vigil as a child
'vigil up' with a fresh data directory, or Debian's mosquitto), connects
--devices simulated devices at 1,000 per second, waits until all are
connected, then measures a steady phase of --duration: the publish rate the broker
sustains, the publish (PUBACK) latency, the broker's CPU and peak memory
(also per reading and per device) and, for Vigil, the readings stored in
SQLite (every acknowledged reading must be stored), the latency from a
device's timestamp to its storage, and where its memory goes (Go heap,
stacks). --profile DIR (created if missing) saves CPU profiles of the
steady phase and Vigil's heap profile.
--subscriber also delivers every reading to one subscriber and measures
delivery latency and loss there.

--target agent measures video ingest instead: one 'vigil agent' process
receives N concurrent RTP/JPEG streams on loopback (pre-encoded frames,
--width x --height at --fps), for each N of --streams, and reports frames/s,
MB/s, packet loss and the agent's CPU; it stops at the first N with 0.1%
loss or more.

--target pull measures RTSP pulling: one 'vigil agent' pulls N IP cameras
at once (N RTSP servers in this process, internal/rtspserve, each playing
--rtsp-file in real time, looping; by default a 20 s 1920x1080 25 fps
H.264 file at 4 Mbit/s that ffmpeg makes for the run), each stream
recorded for --duration (default 20s), for each N of --streams (default
1,4,8,16,32). It reads the segments back: zero loss means every picture
from a stream's first keyframe to its end is stored, with no hole in the
timeline, and the agent reported no lost packet, bad frame or reconnect.
It reports the agent's CPU (in all and per stream), its peak memory and
the stored bitrate against the file's, and stops after the first N that
loses a picture (or whose servers, on the same machine, fall behind).

--target intrusion runs 'vigil up' with --runtime agents and --cameras
simulated cameras that see an intruder --rounds times, --every apart, and
reports the latency from detection to the first stored frame and the
agents' scale-up reaction time (p50, p95).

--target both runs Vigil, then Mosquitto, on the same fleet and prints the
ratio. Runs are bounded: connecting may take at most 2 minutes plus the ramp,
draining at most a minute.`,
	examples: `  vigil bench --devices 10000 --period 1s --duration 60s
  vigil bench --target both --devices 10000 --period 1s --duration 60s --json
  vigil bench --target both --devices 5000 --subscriber --duration 30s --profile profiles
  vigil bench --target mosquitto --devices 1000 --qos 0
  vigil bench --target agent --streams 1,4,8,16,32 --duration 10s
  vigil bench --target pull --streams 1,4,8,16,32 --duration 20s
  vigil bench --target pull --streams 8 --rtsp-file camera.mp4 --rtsp-transport udp --json
  vigil bench --target intrusion --runtime docker --cameras 7 --rounds 5
  vigil bench --target cluster --nodes 1,3 --devices 1000 --period 100ms --duration 30s`,
	flags: func(fs *flag.FlagSet) any {
		f := &benchFlags{}
		fs.StringVar(&f.target, "target", "vigil", "vigil, mosquitto or both (MQTT); cluster (nodes on Mosquitto and PostgreSQL); agent (video ingest, RTP/JPEG); pull (video ingest, RTSP); intrusion")
		fs.StringVar(&f.nodes, "nodes", "1,3", "cluster: node counts to run, in order")
		fs.StringVar(&f.database, "database", "", "cluster: a PostgreSQL server URL whose user may create databases (default: start Debian's postgresql)")
		fs.StringVar(&f.streams, "streams", "1,2,4,8,12,16,24,32", "agent, pull: concurrent stream counts to try, in order (pull, when not given: 1,4,8,16,32)")
		fs.IntVar(&f.width, "width", 640, "agent: frame width")
		fs.IntVar(&f.height, "height", 480, "agent: frame height")
		fs.IntVar(&f.fps, "fps", 15, "agent: frames per second per stream")
		fs.IntVar(&f.quality, "quality", 70, "agent: JPEG quality")
		fs.BoolVar(&f.transcode, "transcode", false, "agent: transcode clips with ffmpeg meanwhile, as vigil up does")
		fs.StringVar(&f.rtspFile, "rtsp-file", "", "pull: MP4 file (H.264 or H.265) the cameras play (default: made with ffmpeg, 1080p H.264 at 4 Mbit/s)")
		fs.StringVar(&f.rtspTransport, "rtsp-transport", "tcp", "pull: RTSP transport the agent asks for, tcp or udp")
		fs.StringVar(&f.runtime, "runtime", "process", "intrusion: agent runtime, process or docker")
		fs.StringVar(&f.image, "image", "vigil-agent:latest", "intrusion: agent image for the docker runtime")
		fs.IntVar(&f.cameras, "cameras", 7, "intrusion: simulated cameras")
		fs.IntVar(&f.rounds, "rounds", 5, "intrusion: intrusions, every --every")
		fs.DurationVar(&f.every, "every", 20*time.Second, "intrusion: time between intrusions")
		fs.IntVar(&f.devices, "devices", 10000, "simulated devices")
		fs.DurationVar(&f.period, "period", time.Second, "time between a device's readings")
		fs.DurationVar(&f.duration, "duration", 60*time.Second, "length of the measured steady phase")
		fs.IntVar(&f.qos, "qos", 1, "QoS of readings and of the subscription")
		fs.StringVar(&f.vigil, "vigil", "", "vigil binary to benchmark (default: this one)")
		fs.BoolVar(&f.jsonOut, "json", false, "print the results as JSON")
		fs.BoolVar(&f.subscriber, "subscriber", false, "also deliver every reading to a subscriber and measure its latency and loss")
		fs.StringVar(&f.profile, "profile", "", "directory for CPU profiles of the steady phase (fleet, and Vigil's broker)")
		return f
	},
	run: runBench,
}

func runBench(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*benchFlags)
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	switch f.target {
	case "agent":
		return runAgentBench(ctx, e, f)
	case "pull":
		return runPullBench(ctx, e, f)
	case "cluster":
		return runClusterBench(ctx, e, f)
	case "intrusion":
		r, err := bench.RunIntrusion(ctx, bench.IntrusionOptions{Runtime: f.runtime, Image: f.image, Cameras: f.cameras,
			Rounds: f.rounds, Every: f.every, Vigil: f.vigil, Progress: e.err})
		if err != nil {
			return err
		}
		if f.jsonOut {
			return printJSON(e.out, r)
		}
		fmt.Fprintf(e.out, "runtime %s, %d cameras x %d intrusions: %d detections, %d clips ready\n", r.Runtime, r.Cameras, r.Rounds, r.Detections, r.ClipsReady)
		fmt.Fprintf(e.out, "detection to first stored frame: p50 %.0f ms, p95 %.0f ms\n", r.FirstFrameP50ms, r.FirstFrameP95ms)
		fmt.Fprintf(e.out, "agent scale-up (start to first heartbeat), %d times: p50 %.0f ms, p95 %.0f ms\n", r.ScaleUps, r.ScaleUpP50ms, r.ScaleUpMaxMS)
		return nil
	}
	targets := []string{f.target}
	if f.target == "both" {
		targets = []string{"vigil", "mosquitto"}
	} else if f.target != "vigil" && f.target != "mosquitto" {
		return usagef("--target %q is not vigil, mosquitto, both, cluster, agent, pull or intrusion", f.target)
	}
	if f.devices < 1 || f.period <= 0 || f.duration <= 0 || f.qos < 0 || f.qos > 2 {
		return usagef("--devices, --period and --duration must be positive and --qos 0, 1 or 2")
	}
	var results []*bench.Result
	for _, t := range targets {
		r, err := bench.Run(ctx, bench.Options{
			Target: t, Devices: f.devices, Period: f.period, Duration: f.duration, QoS: f.qos, Subscriber: f.subscriber,
			Vigil: f.vigil, ProfileDir: f.profile, Progress: e.err, Log: newLogger(e.err, "error", "text"),
		})
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		results = append(results, r)
	}
	if f.jsonOut {
		return printJSON(e.out, results)
	}
	printBench(e.out, results)
	return nil
}

func printBench(w io.Writer, rs []*bench.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, f func(*bench.Result) string) {
		cells := []string{name}
		for _, r := range rs {
			cells = append(cells, f(r))
		}
		if len(rs) == 2 {
			cells = append(cells, "")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	ratio := func(name string, f func(*bench.Result) float64, format string) {
		cells := []string{name}
		for _, r := range rs {
			cells = append(cells, fmt.Sprintf(format, f(r)))
		}
		if len(rs) == 2 && f(rs[1]) != 0 {
			cells = append(cells, fmt.Sprintf("%.2fx", f(rs[0])/f(rs[1])))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	header := []string{""}
	for _, r := range rs {
		header = append(header, r.Target)
	}
	if len(rs) == 2 {
		header = append(header, "vigil/mosquitto")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	row("devices connected", func(r *bench.Result) string { return fmt.Sprintf("%d/%d", r.Connected, r.Devices) })
	ratio("all connected after (s)", func(r *bench.Result) float64 { return r.AllConnectedS }, "%.1f")
	ratio("sustained msgs/s", func(r *bench.Result) float64 { return r.SteadyRate }, "%.0f")
	row("expected msgs/s", func(r *bench.Result) string { return fmt.Sprintf("%.0f", r.Expected) })
	row("published (acked)", func(r *bench.Result) string { return fmt.Sprint(r.Published) })
	row("publish/connect errors", func(r *bench.Result) string { return fmt.Sprintf("%d/%d", r.PubErrors, r.ConnectErrs) })
	if rs[0].Subscriber {
		row("received by subscriber", func(r *bench.Result) string { return fmt.Sprint(r.Received) })
		row("lost at subscriber", func(r *bench.Result) string { return fmt.Sprint(r.SubLost) })
		ratio("delivery latency p50 (ms)", func(r *bench.Result) float64 { return r.SubLatency.P50ms }, "%.2f")
		ratio("delivery latency p99 (ms)", func(r *bench.Result) float64 { return r.SubLatency.P99ms }, "%.2f")
	}
	ratio("ack latency p50 (ms)", func(r *bench.Result) float64 { return r.AckLatency.P50ms }, "%.2f")
	ratio("ack latency p99 (ms)", func(r *bench.Result) float64 { return r.AckLatency.P99ms }, "%.2f")
	row("stored in SQLite", func(r *bench.Result) string { return dash(r.Target == "vigil", fmt.Sprint(r.Stored)) })
	row("acked but not stored", func(r *bench.Result) string { return dash(r.Target == "vigil", fmt.Sprint(r.StoreMissing)) })
	row("store latency p50/p99 (ms)", func(r *bench.Result) string {
		return dash(r.Target == "vigil", fmt.Sprintf("%.1f/%.1f", r.StoreP50ms, r.StoreP99ms))
	})
	ratio("broker CPU (% of a core)", func(r *bench.Result) float64 { return r.BrokerCPUPct }, "%.0f")
	ratio("broker peak RSS (MB)", func(r *bench.Result) float64 { return r.BrokerRSSMB }, "%.0f")
	ratio("peak RSS per device (KB)", func(r *bench.Result) float64 { return r.KBPerDevice }, "%.1f")
	ratio("CPU per reading (µs)", func(r *bench.Result) float64 { return r.USPerReading }, "%.1f")
	if rs[0].Runtime != nil {
		row("Go heap/stacks/other (MB)", func(r *bench.Result) string {
			if r.Runtime == nil {
				return "-"
			}
			return fmt.Sprintf("%.0f/%.0f/%.0f", r.Runtime.HeapInuseMB, r.Runtime.StackInuseMB, r.Runtime.OtherMB)
		})
		row("goroutines, GC cycles", func(r *bench.Result) string {
			if r.Runtime == nil {
				return "-"
			}
			return fmt.Sprintf("%d, %.0f", r.Runtime.Goroutines, r.Runtime.GCCycles)
		})
		row("publisher waits, dropped", func(r *bench.Result) string {
			if r.Runtime == nil {
				return "-"
			}
			return fmt.Sprintf("%.0f, %.0f", r.Runtime.PublisherWaits, r.Runtime.SubscriberDropped)
		})
		row("readings per transaction", func(r *bench.Result) string {
			if r.Runtime == nil || r.Runtime.Batches == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", r.SteadyRate*r.SteadyS/r.Runtime.Batches)
		})
	}
	tw.Flush()
}

func dash(ok bool, s string) string {
	if !ok {
		return "-"
	}
	return s
}

func runAgentBench(ctx context.Context, e *env, f *benchFlags) error {
	var streams []int
	for _, s := range strings.Split(f.streams, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(s), &n); err != nil || n < 1 {
			return usagef("--streams wants numbers like 1,2,4,8, not %q", f.streams)
		}
		streams = append(streams, n)
	}
	dur := f.duration
	if !e.set("duration") {
		dur = 10 * time.Second
	}
	fmt.Fprintf(e.err, "one agent, %dx%d at %d fps, %v per step\n", f.width, f.height, f.fps, dur)
	r, err := bench.RunAgent(ctx, bench.AgentOptions{Streams: streams, Duration: dur, Width: f.width, Height: f.height,
		FPS: f.fps, Quality: f.quality, Vigil: f.vigil, Progress: e.err, Transcode: f.transcode})
	if err != nil {
		return err
	}
	if f.jsonOut {
		return printJSON(e.out, r)
	}
	tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\tframes/s\tMB/s\tpackets sent\tlost\tloss %\tagent CPU %\ttranscodes\t")
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%d\t%.0f\t%.2f\t%d\t%d\t%.3f\t%.0f\t%d\t\n", s.Streams, s.FramesPerSec, s.MBPerSec, s.PacketsSent, s.PacketsLost, s.LossPct, s.AgentCPUPct, s.Transcodes)
	}
	tw.Flush()
	fmt.Fprintf(e.out, "largest N with loss under 0.1%%: %d streams (%d-byte frames)\n", r.MaxStreams, r.Steps[0].FrameBytes)
	return nil
}

// runPullBench runs --target pull and prints a row per stream count.
func runPullBench(ctx context.Context, e *env, f *benchFlags) error {
	spec := f.streams
	if !e.set("streams") {
		spec = "1,4,8,16,32"
	}
	var streams []int
	for p := range strings.SplitSeq(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return usagef("--streams wants numbers like 1,4,8,16, not %q", spec)
		}
		streams = append(streams, n)
	}
	dur := f.duration
	if !e.set("duration") {
		dur = 20 * time.Second
	}
	if dur < time.Second {
		return usagef("--duration must be a second or more")
	}
	if f.rtspTransport != "tcp" && f.rtspTransport != "udp" {
		return usagef("--rtsp-transport is tcp or udp, not %q", f.rtspTransport)
	}
	fmt.Fprintf(e.err, "one agent pulling N RTSP cameras over %s, %v a stream\n", f.rtspTransport, dur)
	r, err := bench.RunPull(ctx, bench.PullOptions{Streams: streams, Duration: dur, File: f.rtspFile, Transport: f.rtspTransport,
		Vigil: f.vigil, Progress: e.err})
	if err != nil {
		return err
	}
	if f.jsonOut {
		return printJSON(e.out, r)
	}
	in := r.Input
	fmt.Fprintf(e.out, "input: %s %dx%d %.3g fps, keyframe every %.2g s, %.2f Mbit/s; %s, %.0f s a stream\n",
		in.Codec, in.Width, in.Height, in.FPS, in.GOPSeconds, in.BitrateMbps, r.Transport, r.DurationS)
	tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\tframes stored/expected\tmissing\tpkts lost/bad\tserver drops/stalls\tagent CPU %\tper stream %\tµs/frame\tRSS MB\tMbit/s in/stored\tservers CPU %\tmachine %\tfirst picture ms\tverdict\t")
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%d\t%d/%d\t%d\t%d/%d\t%d/%d\t%.1f\t%.2f\t%.0f\t%.0f\t%.2f/%.2f\t%.0f\t%.0f\t%.0f\t%s\t\n", s.Streams, s.FramesStored, s.FramesExpected,
			s.FramesMissing, s.PacketsLost, s.BadFrames, s.ServerDrops, s.Stalls, s.AgentCPUPct, s.CPUPerStreamPct, s.CPUPerFrameUS, s.AgentRSSMB, in.BitrateMbps, s.StoredMbps,
			s.ServersCPUPct, s.MachinePct, s.StartMS, s.Verdict)
	}
	tw.Flush()
	fmt.Fprintf(e.out, "largest N with 0 loss: %d streams\n", r.MaxStreams)
	return nil
}

// runClusterBench runs --target cluster and prints a row per node count.
func runClusterBench(ctx context.Context, e *env, f *benchFlags) error {
	var nodes []int
	for p := range strings.SplitSeq(f.nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 16 {
			return usagef("--nodes %q: want node counts of 1 to 16, comma-separated", f.nodes)
		}
		nodes = append(nodes, n)
	}
	if f.devices < 1 || f.period <= 0 || f.duration <= 0 || f.qos < 1 || f.qos > 2 {
		return usagef("--devices, --period and --duration must be positive and --qos 1 or 2 (the nodes acknowledge what they store)")
	}
	rs, err := bench.RunCluster(ctx, bench.ClusterOptions{Nodes: nodes, Devices: f.devices, Period: f.period, Duration: f.duration,
		QoS: f.qos, Vigil: f.vigil, Database: f.database, Progress: e.err, Log: newLogger(e.err, "error", "text")})
	if err != nil {
		return err
	}
	if f.jsonOut {
		return printJSON(e.out, rs)
	}
	tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "nodes\tacknowledged/s\tstored/s\tsplit\tCPU per node (% of a core)\tMosquitto CPU\tstored once (rows/distinct/acked)\tack p99")
	for _, r := range rs {
		var split, cpu []string
		for i := range r.Share {
			split = append(split, fmt.Sprintf("%.0f%%", 100*r.Share[i]))
			cpu = append(cpu, fmt.Sprintf("%.0f", r.NodeCPUPct[i]))
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%s\t%s\t%.0f%%\t%d/%d/%d\t%.1f ms\n", r.Nodes, r.Offered, r.StoredRate, strings.Join(split, "/"),
			strings.Join(cpu, "/"), r.BrokerCPU, r.Stored, r.Distinct, r.Published, r.AckP99ms)
	}
	return tw.Flush()
}
