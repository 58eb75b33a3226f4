// Package alert keeps the alerts that hold now: what needs the owner's
// attention until it clears (an agent lost, a disk almost full, a watched
// broker down, a security finding). Sources say what holds; the Engine
// compares that with what held, tells people once of each new alert
// (also across restarts: it keeps whom it told in the store), and reports
// every change to the list.
package alert

import (
	"context"
	"strings"
	"time"
)

// Kind is what an alert is about. With its subject it makes the alert's
// ID, which stays the same while the alert lasts.
type Kind string

// The kinds of alert.
const (
	KindHealth          Kind = "health"           // the database or the pipeline fails
	KindAgentLost       Kind = "agent_lost"       // subject: the agent
	KindDisk            Kind = "disk"             // subject: data or clips
	KindAudit           Kind = "audit"            // subject: check:severity:target
	KindBrokerDown      Kind = "watch"            // subject: the watched broker
	KindBrokerSlow      Kind = "watch-latency"    // subject: the watched broker
	KindBlocks          Kind = "blocks"           // MQTT clients or addresses blocked
	KindSlowSubscribers Kind = "slow_subscribers" // MQTT subscribers losing messages
	KindDelivery        Kind = "notify"           // subject: the failing channel's id
)

// Level is how bad an alert is.
type Level string

// The levels, most severe first.
const (
	Critical Level = "critical"
	Warning  Level = "warning"
)

// Priority is the notification priority (0-100) of an alert of this level.
func (l Level) Priority() int {
	if l == Critical {
		return 90
	}
	return 70
}

// Alert is one thing that needs attention, shown as the web UI's banner
// until it clears.
type Alert struct {
	ID     string    `json:"id"` // Kind, or Kind:subject
	Kind   Kind      `json:"kind"`
	Level  Level     `json:"level"`
	Title  string    `json:"title"`
	Detail string    `json:"detail,omitempty"`
	Link   string    `json:"link,omitempty"` // the page about it; "" is the overview
	Since  time.Time `json:"since"`
	// Silent alerts are shown but never notified: a failing notification
	// channel is not announced through the channels.
	Silent bool `json:"-"`
}

// New returns an alert of kind about subject ("" when there is only one
// of its kind).
func New(kind Kind, subject string, level Level, title, detail string) Alert {
	id := string(kind)
	if subject != "" {
		id += ":" + subject
	}
	return Alert{ID: id, Kind: kind, Level: level, Title: title, Detail: detail}
}

// Source says which alerts hold now. Sources are asked on every check,
// one after the other; they answer from memory or with a quick query.
type Source interface {
	Alerts(ctx context.Context) []Alert
}

// SourceFunc is a Source made of a function.
type SourceFunc func(ctx context.Context) []Alert

// Alerts calls f.
func (f SourceFunc) Alerts(ctx context.Context) []Alert { return f(ctx) }

// less orders alerts most severe first, then oldest first.
func less(x, y Alert) int {
	if x.Level != y.Level {
		return strings.Compare(string(x.Level), string(y.Level)) // critical < warning
	}
	if c := x.Since.Compare(y.Since); c != 0 {
		return c
	}
	return strings.Compare(x.ID, y.ID)
}
