package app

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/cluster"
	"github.com/vigilhq/vigil/internal/rnd"
	"github.com/vigilhq/vigil/internal/version"
)

// openNode records this node in the database now and every cluster.Every
// (GET /api/v1/cluster lists the nodes that share the database).
func (a *App) openNode() error {
	// Field by field: other goroutines read a.node.ID already.
	a.node.Name, _ = os.Hostname()
	a.node.HTTP, a.node.Version, a.node.Started = a.cfg.HTTP.PublicURL, version.Version, a.started.UTC()
	if a.node.HTTP == "" {
		a.node.HTTP = "http://" + a.HTTP.Addr().String()
	}
	save := func(ctx context.Context) {
		n := a.node
		n.LastSeen, n.Coordinator = time.Now(), a.coord.running()
		if err := a.Store.SaveNode(ctx, n); err != nil && ctx.Err() == nil {
			a.log.Warn("record this node", "error", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	save(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cluster.Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				save(ctx)
			}
		}
	})
	a.onClose(func() error { cancel(); wg.Wait(); return nil })
	return nil
}

// nodeID is this node's id, made on first start and kept in
// <data.dir>/node-id.
func nodeID(dir string) (string, error) {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	id := rnd.Hex(8)
	return id, os.WriteFile(path, []byte(id+"\n"), 0o600)
}
