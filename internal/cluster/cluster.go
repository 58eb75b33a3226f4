// Package cluster describes the Vigil nodes that share a database: each
// node records itself (its HTTP address, version, whether it runs the
// coordinator) every few seconds, and GET /api/v1/cluster lists them.
package cluster

import "time"

// Every is how often a node records that it is alive.
const Every = 5 * time.Second

// Node is one vigil up.
type Node struct {
	ID      string    `json:"id"`   // stays the same across restarts (data.dir/node-id)
	Name    string    `json:"name"` // the host's name
	HTTP    string    `json:"http"` // its web UI and API
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// LastSeen is when it last recorded itself; Up is whether that was
	// within three of its periods.
	LastSeen time.Time `json:"last_seen"`
	Up       bool      `json:"up"`
	// Coordinator tells that the node runs the coordinator (and its agent
	// runtime).
	Coordinator bool `json:"coordinator"`
}

// Mark sets n.Up as of now.
func (n *Node) Mark(now time.Time) { n.Up = now.Sub(n.LastSeen) <= 3*Every }
