package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLogLogsOncePerIntervalAndCountsTheRest(t *testing.T) {
	var buf bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	for range 100 {
		r.Warn("malformed", "rejected")
	}
	r.Warn("invalid", "rejected") // another reason has its own budget
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 101 messages in one interval:\n%s", n, buf.String())
	}
	now = now.Add(61 * time.Second)
	r.Warn("malformed", "rejected")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "similar_not_logged=99") {
		t.Fatalf("after the interval:\n%s", buf.String())
	}
}
