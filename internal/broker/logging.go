package broker

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// quietHandler passes on only records at or above min: mochi logs every
// listener and hook at info level, which Vigil already reports itself.
// It also drops the "pk" and "packet" attributes mochi adds to some lines
// ("error processing packet", "failed publishing packet"): a dump of the
// whole packet struct, kilobytes per line, that a misbehaving client could
// otherwise fill the log with; the error and the client id say what
// happened.
//
// Records about vigil up's self-audit probes (its client ids, see
// selfAudit) are expected, not warnings: they are counted for the
// self-audit's summary line and logged at debug.
type quietHandler struct {
	slog.Handler
	min       slog.Level
	selfAudit *selfAudit
	taps      *logTaps
}

// minimumKeepAliveWarning is mochi's warning of a short keep-alive.
var minimumKeepAliveWarning = mqtt.ErrMinimumKeepalive.Error()

// logTaps are events mochi only logs, which the broker needs to know.
type logTaps struct {
	// unacked is told of each QoS 1 or 2 message mochi dropped for a
	// client that had MaxInflight messages unacknowledged ("client store
	// quota reached"); the broker counts and logs it (set before serving).
	unacked func(clientID string)
}

// Enabled takes every record at or above min, whatever the level the
// logger passes on: some tell the broker of events mochi only logs (taps),
// and must reach Handle even when nobody would read them.
func (h quietHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.min
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	dump, probe, client := false, false, ""
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "pk", "packet":
			dump = true
		case "client":
			client = a.Value.String()
			probe = h.selfAudit != nil && h.selfAudit.is(client)
		}
		return true
	})
	if r.Message == "client store quota reached" && h.taps != nil && h.taps.unacked != nil {
		h.taps.unacked(client)
		return nil
	}
	if r.Message == minimumKeepAliveWarning {
		// mochi warns of every client whose keep-alive is 5 s or less,
		// 0 (none) included, at every connection: MQTT allows any
		// (3.1.2.10), and the operator can do nothing about a device's.
		r.Level = slog.LevelDebug
	}
	if !h.Handler.Enabled(ctx, r.Level) && !probe {
		return nil
	}
	level := r.Level
	if probe {
		h.selfAudit.violations.Add(1)
		if level, r.Level = slog.LevelDebug, slog.LevelDebug; !h.Handler.Enabled(ctx, level) {
			return nil
		}
	}
	if !dump {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "pk" && a.Key != "packet" {
			out.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h quietHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(a), h.min, h.selfAudit, h.taps}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name), h.min, h.selfAudit, h.taps}
}

// selfAudit recognises vigil up's self-audit probes by the prefix of their
// client ids: random, made anew for each audit, known only to this process
// and recognised only while that audit runs (its reports, which quote client
// ids, name a prefix that no longer means anything). It counts what they
// provoked.
type selfAudit struct {
	prefix              atomic.Pointer[string] // nil: no audit running
	refused, violations atomic.Int64
}

func (s *selfAudit) is(clientID string) bool {
	p := s.prefix.Load()
	return p != nil && strings.HasPrefix(clientID, *p)
}
