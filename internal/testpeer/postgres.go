package testpeer

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/pgtemp"
)

// Postgres is a PostgreSQL server of the tests' own (pgtemp): initdb in a
// temporary directory, a loopback port, fsync off.
type Postgres struct{ *pgtemp.Server }

// PostgresBin returns the directory of Debian's PostgreSQL programs
// (initdb, postgres), or "" when none is installed.
func PostgresBin() string { return pgtemp.Bin() }

// NeedPostgres starts a PostgreSQL server for t, stopped when t ends. It
// skips t when PostgreSQL is not installed (failing it under CI).
func NeedPostgres(t testing.TB) *Postgres {
	t.Helper()
	if PostgresBin() == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL is not installed; scripts/test.sh installs it")
		}
		t.Skip("PostgreSQL is not installed (scripts/test.sh installs it)")
	}
	p, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// StartPostgres makes and starts a cluster; Close stops it and removes
// it. For a package's tests to share one server (TestMain).
func StartPostgres() (*Postgres, error) {
	s, err := pgtemp.Start(pgtemp.Options{})
	if err != nil {
		return nil, err
	}
	return &Postgres{s}, nil
}

// NewDatabase creates an empty database for t and returns its URL.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := p.Server.NewDatabase(ctx, "test_"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	return u
}
