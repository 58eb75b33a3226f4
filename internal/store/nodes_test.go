package store

import (
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/cluster"
)

// A node records itself again and again as one row; the list says which
// nodes were heard from lately, and forgets those gone for a day.
func TestNodesAreListedUpOrDown(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Millisecond)
	save := func(n cluster.Node) {
		t.Helper()
		if err := s.SaveNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	save(cluster.Node{ID: "old", Name: "c", Started: t0.Add(-48 * time.Hour), LastSeen: t0.Add(-25 * time.Hour)})
	save(cluster.Node{ID: "n1", Name: "a", HTTP: "http://10.0.0.1:8080", Version: "v1", Started: t0.Add(-time.Hour), LastSeen: t0.Add(-time.Minute)})
	save(cluster.Node{ID: "n2", Name: "b", Started: t0, LastSeen: t0, Coordinator: true})
	save(cluster.Node{ID: "n1", Name: "a", HTTP: "http://10.0.0.1:8080", Version: "v1", Started: t0.Add(-time.Hour), LastSeen: t0.Add(-time.Second)})
	nodes, err := s.ListNodes(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].ID != "n1" || !nodes[0].Up || nodes[0].HTTP != "http://10.0.0.1:8080" || nodes[0].Coordinator ||
		nodes[1].ID != "n2" || !nodes[1].Coordinator || !nodes[1].LastSeen.Equal(t0) {
		t.Fatalf("nodes %+v", nodes)
	}
	nodes, _ = s.ListNodes(ctx, t0.Add(time.Minute))
	if nodes[0].Up || nodes[1].Up {
		t.Errorf("a minute without news, still up: %+v", nodes)
	}
}
