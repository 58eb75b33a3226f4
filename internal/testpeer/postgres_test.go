package testpeer_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vigilhq/vigil/internal/testpeer"
)

// The test server takes connections, gives each test a database of its
// own, and is gone after Close.
func TestPostgresServesADatabasePerTest(t *testing.T) {
	pg := testpeer.NeedPostgres(t)
	a, b := pg.NewDatabase(t), pg.NewDatabase(t)
	if a == b {
		t.Fatalf("two databases at one URL %s", a)
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT 1 + 1").Scan(&n); err != nil || n != 2 {
		t.Fatalf("SELECT 1 + 1: %d, %v", n, err)
	}
	pg.Close()
	if c2, err := pgx.Connect(ctx, b); err == nil {
		c2.Close(ctx)
		t.Error("the server still answers after Close")
	}
}
