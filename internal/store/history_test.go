package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/coord"
)

// The agent history keeps the newest decisions only, oldest going first,
// so that a site recording all day does not grow it without end.
func TestTheAgentHistoryKeepsTheNewestDecisions(t *testing.T) {
	s := openTest(t)
	s.historyKeep = 300
	ctx := context.Background()
	t0 := time.Date(2026, 12, 5, 20, 0, 0, 0, time.UTC)
	for i := range 550 {
		h := &coord.HistoryEntry{At: t0.Add(time.Duration(i) * time.Second), Action: "assign", Agent: "a-1", Camera: fmt.Sprintf("cam-%d", i)}
		if err := s.AddHistory(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	var n, oldest int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(id) FROM agent_history`).Scan(&n, &oldest); err != nil {
		t.Fatal(err)
	}
	// Trimmed at the 400th and 500th: 201 to 550 are left.
	if n != 350 || oldest != 201 {
		t.Errorf("after 550 decisions with 300 kept: %d rows, the oldest id %d; want 350 from 201", n, oldest)
	}
	newest, err := s.ListHistory(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(newest) != 1 || newest[0].Camera != "cam-549" {
		t.Errorf("newest decision: %+v, want cam-549's", newest)
	}
}
