package main

import (
	"context"
	"flag"
	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/agent"
	"github.com/vigilhq/vigil/internal/mqttconn"
)

type agentFlags struct {
	id, brokers, username, listen, advertise, storage, logLevel string
	tls                                                         mqttconn.TLS
	port, capacity, rtspCapacity, ringCapacity                  int
	idle                                                        time.Duration
}

var agentCommand = &command{
	name:    "agent",
	summary: "run a video ingest agent (normally started by 'vigil up')",
	usage:   "agent [flags]",
	help: `
Receives RTP/JPEG video over UDP from the cameras the coordinator assigns to
it, and pulls the RTSP cameras (H.264, H.265) it is given, copying their
video as it is; stores each stream as clip segments under --storage, and reports to the
coordinator over MQTT (heartbeats, full/empty, segments). 'vigil up' starts
and stops agents itself, as child processes or Docker containers
(agents.runtime); run one by hand only to test or to place one on another
machine with shared storage.

The MQTT password comes from $VIGIL_AGENT_PASSWORD, never from the command
line (where other users could read it).`,
	examples: `  VIGIL_AGENT_PASSWORD=... vigil agent --id a1 --broker mqtt://10.0.0.2:1883 --username agent-a1 \
      --listen 0.0.0.0 --storage /srv/vigil/clips --capacity 3 --rtsp-capacity 16 --ring-capacity 32`,
	flags: func(fs *flag.FlagSet) any {
		f := &agentFlags{}
		fs.StringVar(&f.id, "id", "", "agent id (required)")
		fs.StringVar(&f.brokers, "broker", "mqtt://127.0.0.1:1883", "broker URL(s), comma-separated")
		fs.StringVar(&f.username, "username", "", "MQTT username")
		fs.StringVar(&f.tls.CA, "ca", "", "PEM CA bundle that verifies the broker's certificate (mqtts://, wss://)")
		fs.StringVar(&f.tls.Cert, "cert", "", "client certificate (PEM) for a broker that asks for one")
		fs.StringVar(&f.tls.Key, "key", "", "the client certificate's key (PEM)")
		fs.StringVar(&f.listen, "listen", "127.0.0.1", "IP address to receive RTP on")
		fs.IntVar(&f.port, "port", 0, "RTP port (RTCP on port+1); 0 picks a free even port")
		fs.StringVar(&f.advertise, "advertise", "", "host cameras send to (default: the listen IP, or this host's first address)")
		fs.StringVar(&f.storage, "storage", "./vigil-data/clips", "clip storage root, shared with 'vigil up'")
		fs.IntVar(&f.capacity, "capacity", 3, "concurrent JPEG streams (pushed by cameras over UDP)")
		fs.IntVar(&f.rtspCapacity, "rtsp-capacity", 0, "concurrent RTSP recordings (pulled from IP cameras, stored as they are); 0: none")
		fs.IntVar(&f.ringCapacity, "ring-capacity", 0, "RTSP cameras whose last seconds it keeps for pre-roll; 0: none")
		fs.DurationVar(&f.idle, "idle", 3*time.Second, "end a stream after this long without packets")
		fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
		return f
	},
	run: func(ctx context.Context, e *env, o any, args []string) error {
		f := o.(*agentFlags)
		if f.id == "" {
			return usagef("--id is required")
		}
		log := newLogger(e.err, f.logLevel, "text").With("component", "agent", "agent", f.id)
		a, err := agent.Open(ctx, agent.Config{
			ID: f.id, Brokers: strings.Split(f.brokers, ","), Username: f.username, Password: e.getenv("VIGIL_AGENT_PASSWORD"), TLS: f.tls,
			Listen: f.listen, Port: f.port, Advertise: f.advertise, Storage: f.storage, Capacity: f.capacity, Idle: f.idle,
			RTSPCapacity: f.rtspCapacity, RingCapacity: f.ringCapacity,
		}, log)
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped before the broker answered
			}
			return err
		}
		<-ctx.Done()
		return a.Close()
	},
}
