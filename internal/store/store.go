// Package store is Vigil's database: SQLite by default (modernc.org/sqlite,
// no cgo), PostgreSQL for installs that share one (pgx). One schema from
// the same embedded migrations, and the same queries, serve both (see
// dialect.go): devices and readings for the telemetry pipeline, users,
// sessions, sites, events and clips, notifications, audits.
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
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
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
	db    *db
	devs  deviceCache
	plans planCache
	// shared is how stale this node's copy of the devices and plans may
	// be on a database other nodes write too (PostgreSQL); 0 on SQLite,
	// which is this node's alone.
	shared time.Duration
	// stopRefresh ends the goroutine that reads the plans again (shared).
	stopRefresh context.CancelFunc
	refreshing  sync.WaitGroup
	// applyPrepared: Apply's statements are prepared (under devs.mu).
	applyPrepared bool
	// historyKeep is how many of the coordinator's decisions the agent
	// history keeps (maxHistory; tests set less).
	historyKeep int64
}

// sharedRefresh is Store.shared on PostgreSQL.
const sharedRefresh = 2 * time.Second

// Open opens the database and applies pending migrations: a PostgreSQL
// database for a postgres:// or postgresql:// URL, else the SQLite file at
// path (created if needed, and made readable by this user only, with its
// -wal and -shm files: SQLite gives them its mode).
func Open(ctx context.Context, path string) (*Store, error) {
	var s *Store
	if strings.HasPrefix(path, "postgres://") || strings.HasPrefix(path, "postgresql://") {
		sdb, err := sql.Open("pgx", path)
		if err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
		sdb.SetMaxOpenConns(16)
		sdb.SetConnMaxIdleTime(time.Minute)
		s = &Store{db: &db{DB: sdb, d: postgres}, shared: sharedRefresh, historyKeep: maxHistory}
	} else {
		if err := private(path); err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
		q := url.Values{}
		// A large fleet's readings land on as many index pages as it has
		// devices: cache_size keeps those pages in memory (64 MiB), and a larger
		// wal_autocheckpoint lets a page rewritten by many commits be copied
		// back to the database once, not after every commit. temp_store
		// keeps each multi-row INSERT's statement journal (the pages it
		// changed, to undo it alone) in memory: past 64 KiB SQLite wrote
		// it to a temporary file, a system call per page, a fifth of the
		// cost of storing a reading (BenchmarkApply).
		for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(" + synchronous + ")", "foreign_keys(1)",
			"cache_size(-65536)", "wal_autocheckpoint(16384)", "temp_store(MEMORY)"} {
			q.Add("_pragma", p)
		}
		q.Set("_txlock", "immediate")
		sdb, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
		if err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
		sdb.SetMaxOpenConns(4)
		sdb.SetConnMaxIdleTime(time.Minute)
		s = &Store{db: &db{DB: sdb, d: sqlite}, historyKeep: maxHistory}
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("migrate %s: %w", redactURL(path), err)
	}
	if err := s.loadPlans(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	if s.shared > 0 {
		rctx, cancel := context.WithCancel(context.Background())
		s.stopRefresh = cancel
		every := s.shared
		s.refreshing.Go(func() { s.refreshPlans(rctx, every) })
	}
	return s, nil
}

// redactURL is a database URL fit for a message: without its password.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return s
}

// Close writes the devices' latest values and closes the database.
func (s *Store) Close() error {
	if s.stopRefresh != nil {
		s.stopRefresh()
		s.refreshing.Wait()
	}
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
	if s.db.d == postgres {
		return s.migratePostgres(ctx, names)
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

// migrateLock is the key of the advisory lock under which a PostgreSQL
// schema is migrated: nodes that start together take turns, and the first
// migrates.
const migrateLock = 0x76696769 // "vigi"

// migratePostgres applies the pending migrations in one transaction (DDL
// is transactional in PostgreSQL) under migrateLock; the schema's version
// is kept in the table schema_version.
func (s *Store) migratePostgres(ctx context.Context, names []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, migrateLock); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)`); err != nil {
		return err
	}
	var version int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&version); err != nil {
		return err
	}
	if version > len(names) {
		return fmt.Errorf("database schema version %d is newer than this vigil (%d); upgrade vigil", version, len(names))
	}
	if version == len(names) {
		return nil
	}
	for i := version; i < len(names); i++ {
		body, err := migrations.ReadFile(names[i])
		if err != nil {
			return err
		}
		// Several statements, no parameters: sent as they are.
		if _, err := tx.Tx.ExecContext(ctx, postgres.schema(string(body))); err != nil {
			return fmt.Errorf("%s: %w", strings.TrimPrefix(names[i], "migrations/"), err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, len(names)); err != nil {
		return err
	}
	return tx.Commit()
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
