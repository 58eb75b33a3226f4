// Package store is Vigil's SQLite adapter (modernc.org/sqlite, no cgo): the
// schema and its embedded migrations, devices and readings for the
// telemetry pipeline, and user accounts.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// synchronous is SQLite's fsync policy. NORMAL, in WAL mode: a commit
// survives a crash of the process for certain, and a power loss once the
// next checkpoint has synced it; FULL syncs the WAL at every commit
// (BenchmarkCommit measures what that costs).
var synchronous = "NORMAL"

// Store is an open Vigil database.
type Store struct {
	db    *sql.DB
	devs  deviceCache
	plans planCache
}

// Open opens (creating if needed) the database at path and applies pending
// migrations. The database file is made readable by this user only, and
// with it the -wal and -shm files (SQLite gives them its mode).
func Open(ctx context.Context, path string) (*Store, error) {
	if err := private(path); err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	q := url.Values{}
	// A large fleet's readings land on as many index pages as it has
	// devices: cache_size keeps those pages in memory (64 MiB), and a larger
	// wal_autocheckpoint lets a page rewritten by many commits be copied
	// back to the database once, not after every commit.
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(" + synchronous + ")", "foreign_keys(1)",
		"cache_size(-65536)", "wal_autocheckpoint(16384)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(time.Minute)
	s := &Store{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	if err := s.loadPlans(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close writes the devices' latest values and closes the database.
func (s *Store) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(s.Checkpoint(ctx), s.db.Close())
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// migrate applies migrations/NNNN_*.sql numbered above PRAGMA user_version,
// in order, each in its own transaction. The numbers must run 1, 2, 3...
// without a gap.
func (s *Store) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for i, n := range names {
		var num int
		if _, err := fmt.Sscanf(strings.TrimPrefix(n, "migrations/"), "%04d_", &num); err != nil || num != i+1 {
			return fmt.Errorf("migration %s is out of sequence (want number %d)", n, i+1)
		}
	}
	var version int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if version > len(names) {
		return fmt.Errorf("database schema version %d is newer than this vigil (%d); upgrade vigil", version, len(names))
	}
	for i := version; i < len(names); i++ {
		body, err := migrations.ReadFile(names[i])
		if err != nil {
			return err
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("%s: %w", strings.TrimPrefix(names[i], "migrations/"), err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// private creates the database file with mode 0600, or sets that mode on
// the file and on -wal, -shm and -journal files an older Vigil left more
// open.
func private(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	err = f.Chmod(0o600)
	f.Close()
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if cerr := os.Chmod(path+suffix, 0o600); cerr != nil && !errors.Is(cerr, fs.ErrNotExist) {
			err = errors.Join(err, cerr)
		}
	}
	return err
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
