package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// dialect is the SQL engine behind a Store. The store's SQL is written
// once, for both: placeholders are ?, rewritten $1, $2... for PostgreSQL;
// the few statements that differ ask the dialect.
type dialect int

const (
	sqlite dialect = iota
	postgres
)

// db is the database, with its dialect's placeholders.
type db struct {
	*sql.DB
	d dialect

	// stmts are the statements prepared once, by their text (prepared).
	stmtsMu sync.Mutex
	stmts   map[string]*sql.Stmt
}

func (d *db) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return d.DB.ExecContext(ctx, d.d.rebind(q), d.d.args(args)...)
}

func (d *db) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return d.DB.QueryContext(ctx, d.d.rebind(q), d.d.args(args)...)
}

func (d *db) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return d.DB.QueryRowContext(ctx, d.d.rebind(q), d.d.args(args)...)
}

func (d *db) BeginTx(ctx context.Context, opts *sql.TxOptions) (*tx, error) {
	t, err := d.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &tx{Tx: t, d: d.d, db: d}, nil
}

// prepare prepares the statements qs once for the life of the database,
// outside any transaction (a transaction holds a connection, and preparing
// may take another).
func (d *db) prepare(ctx context.Context, qs ...string) error {
	d.stmtsMu.Lock()
	defer d.stmtsMu.Unlock()
	for _, q := range qs {
		if d.stmts[q] != nil {
			continue
		}
		st, err := d.DB.PrepareContext(ctx, d.d.rebind(q))
		if err != nil {
			return err
		}
		if d.stmts == nil {
			d.stmts = map[string]*sql.Stmt{}
		}
		d.stmts[q] = st
	}
	return nil
}

// Close closes the prepared statements and the database.
func (d *db) Close() error {
	d.stmtsMu.Lock()
	for _, st := range d.stmts {
		st.Close()
	}
	d.stmts = nil
	d.stmtsMu.Unlock()
	return d.DB.Close()
}

// tx is a transaction, with its dialect's placeholders.
type tx struct {
	*sql.Tx
	d  dialect
	db *db
}

// prepared returns q, which db.prepare prepared, for this transaction.
func (t *tx) prepared(ctx context.Context, q string) (*sql.Stmt, error) {
	t.db.stmtsMu.Lock()
	st := t.db.stmts[q]
	t.db.stmtsMu.Unlock()
	if st == nil {
		return nil, fmt.Errorf("statement not prepared: %.60s", q)
	}
	return t.Tx.StmtContext(ctx, st), nil
}

// maxRows is how many rows one multi-row statement carries. SQLite's
// driver (modernc.org/sqlite v1.40) binds each parameter by searching the
// arguments from the first, which costs the square of a statement's
// parameters: at 200 rows binding took longer than inserting (see
// BenchmarkApply). PostgreSQL takes a statement per round trip.
func (d dialect) maxRows() int {
	if d == postgres {
		return 128
	}
	return 32
}

// statementRows splits n rows into statements: as many of maxRows as
// fit, then one of each power of two the rest is made of, so that a few
// statements, prepared once, serve every batch.
func (d dialect) statementRows(n int) []int {
	var out []int
	for ; n >= d.maxRows(); n -= d.maxRows() {
		out = append(out, d.maxRows())
	}
	for p := d.maxRows() / 2; p > 0; p /= 2 {
		if n >= p {
			out = append(out, p)
			n -= p
		}
	}
	return out
}

// statementSizes are the row counts statementRows uses.
func (d dialect) statementSizes() []int {
	var out []int
	for p := d.maxRows(); p > 0; p /= 2 {
		out = append(out, p)
	}
	return out
}

func (t *tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

func (t *tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

func (t *tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

// args are a statement's arguments as the dialect takes them: the schema
// keeps booleans as 0 and 1 (SQLite has no boolean type), which pgx does
// not make of a bool by itself.
func (d dialect) args(args []any) []any {
	if d != postgres {
		return args
	}
	var out []any // a copy once a bool is met: the caller's slice stays as it is
	for i, a := range args {
		b, ok := a.(bool)
		if !ok {
			continue
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		out[i] = 0
		if b {
			out[i] = 1
		}
	}
	if out == nil {
		return args
	}
	return out
}

// rebind rewrites the ? placeholders of q, outside string literals and
// quoted names, as $1, $2... for PostgreSQL. (database/sql leaves
// placeholders to the driver, and pgx takes only the numbered kind.)
func (d dialect) rebind(q string) string {
	if d != postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

var (
	integerKey = regexp.MustCompile(`\bINTEGER PRIMARY KEY\b`)
	integer    = regexp.MustCompile(`\bINTEGER\b`)
	real       = regexp.MustCompile(`\bREAL\b`)
)

// schema turns a migration, written for SQLite, into the dialect's: for
// PostgreSQL an INTEGER is a BIGINT (SQLite's are 64-bit), an INTEGER
// PRIMARY KEY an identity column (SQLite's rowid), a REAL a double.
func (d dialect) schema(migration string) string {
	if d != postgres {
		return migration
	}
	s := integerKey.ReplaceAllString(migration, "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
	s = integer.ReplaceAllString(s, "BIGINT")
	return real.ReplaceAllString(s, "DOUBLE PRECISION")
}

// jsonArrayHas is a condition true when the JSON array in column holds the
// string of the next placeholder.
func (d dialect) jsonArrayHas(column string) string {
	if d == postgres {
		return "EXISTS (SELECT 1 FROM jsonb_array_elements_text(" + column + "::jsonb) AS e(value) WHERE e.value = ?)"
	}
	return "EXISTS (SELECT 1 FROM json_each(" + column + ") WHERE value = ?)"
}

// isUnique tells whether err is a unique constraint's.
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE") || strings.Contains(s, "SQLSTATE 23505")
}
