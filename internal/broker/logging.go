package broker

import (
	"context"
	"log/slog"
)

// quietHandler passes on only records at or above min: mochi logs every
// listener and hook at info level, which Vigil already reports itself.
// It also drops the "pk" attribute mochi adds to "error processing
// packet": a dump of the whole packet struct, kilobytes per line, that a
// misbehaving client could otherwise fill the log with; the error and the
// client id say what happened.
type quietHandler struct {
	slog.Handler
	min slog.Level
}

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	dump := false
	r.Attrs(func(a slog.Attr) bool {
		dump = a.Key == "pk"
		return !dump
	})
	if !dump {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "pk" {
			out.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h quietHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(a), h.min}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name), h.min}
}
