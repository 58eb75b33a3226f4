package store

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/cluster"
)

// SaveNode records a node as it is now, and forgets the nodes not seen for
// a day.
func (s *Store) SaveNode(ctx context.Context, n cluster.Node) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO nodes (id, name, http, version, started, last_seen, coordinator) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, http = excluded.http, version = excluded.version,
			started = excluded.started, last_seen = excluded.last_seen, coordinator = excluded.coordinator`,
		n.ID, n.Name, n.HTTP, n.Version, ms(n.Started), ms(n.LastSeen), n.Coordinator); err != nil {
		return fmt.Errorf("save node: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM nodes WHERE last_seen < ?`, ms(n.LastSeen.Add(-24*time.Hour))); err != nil {
		return fmt.Errorf("forget old nodes: %w", err)
	}
	return nil
}

// ListNodes returns the nodes by name, each marked up or down as of now.
func (s *Store) ListNodes(ctx context.Context, now time.Time) ([]cluster.Node, error) {
	nodes, err := queryAll(ctx, s.db, "list nodes", func(r scanner) (cluster.Node, error) {
		var n cluster.Node
		var started, seen int64
		var coord int
		err := r.Scan(&n.ID, &n.Name, &n.HTTP, &n.Version, &started, &seen, &coord)
		n.Started, n.LastSeen, n.Coordinator = fromMS(started), fromMS(seen), coord == 1
		return n, err
	}, `SELECT id, name, http, version, started, last_seen, coordinator FROM nodes ORDER BY name, id`)
	for i := range nodes {
		nodes[i].Mark(now)
	}
	return nodes, err
}
