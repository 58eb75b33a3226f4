// Package agentrt runs ingest agents for the coordinator: as supervised
// child processes (Process) or as Docker containers (Docker). A runtime
// starts and stops agents and reports those that exit on their own; the
// coordinator decides how many run and what they do.
package agentrt

import (
	"context"
	"time"
)

// Runtime starts and stops agents.
type Runtime interface {
	Name() string
	// Start launches an agent; it returns once the agent is launched, not
	// necessarily connected (the coordinator waits for its first
	// heartbeat). exited is called, on a goroutine of the runtime's, each
	// time the agent exits without being asked to (a runtime may start it
	// again).
	Start(ctx context.Context, spec Spec, exited func(err error)) error
	// Stop stops an agent and waits for it to be gone.
	Stop(ctx context.Context, id string) error
	Close() error
}

// SiteDirMaker is a Runtime whose agents may be unable to make a site's
// directory in the clip storage themselves (Docker agents of a root vigil
// up, in a storage root that is not theirs): the coordinator has it made
// before it sends an agent to record there.
type SiteDirMaker interface {
	MakeSiteDir(site string) error
}

// Spec is what a runtime needs to start an agent.
type Spec struct {
	ID       string
	Username string
	Password string
	Capacity int
	// RTSPCapacity and RingCapacity: RTSP recordings and rings
	// (ingest.Capacity).
	RTSPCapacity int
	RingCapacity int
	Idle         time.Duration
	// Site is the site an agent dedicated to one serves ("" for the shared
	// pool): a runtime that can may give it that site's clips only.
	Site string
}
