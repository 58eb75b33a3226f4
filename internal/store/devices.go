package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// rowsPerStatement is how many rows one INSERT carries.
const rowsPerStatement = 200

var (
	sqlMu    sync.Mutex
	sqlCache = map[string]string{}
)

// multiRow returns head followed by n copies of the row placeholder group,
// memoised because batches mostly have the same sizes.
func multiRow(head, group, tail string, n int) string {
	key := head + "|" + strconv.Itoa(n)
	sqlMu.Lock()
	defer sqlMu.Unlock()
	if q, ok := sqlCache[key]; ok {
		return q
	}
	var b strings.Builder
	b.WriteString(head)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(group)
	}
	b.WriteString(tail)
	sqlCache[key] = b.String()
	return b.String()
}

func upsertDevicesSQL(n int) string {
	return multiRow(`INSERT INTO devices (id, site, type, units, status, status_since, first_seen, last_seen, last_value, client_id) VALUES `,
		`(?,?,?,?,?,?,?,?,?,?)`, `
		ON CONFLICT (id) DO UPDATE SET
			site = excluded.site,
			type = CASE WHEN excluded.type <> '' THEN excluded.type ELSE type END,
			units = CASE WHEN excluded.units <> '' THEN excluded.units ELSE units END,
			status_since = CASE WHEN excluded.status <> status THEN excluded.status_since ELSE status_since END,
			status = excluded.status,
			last_seen = MAX(last_seen, excluded.last_seen),
			last_value = COALESCE(excluded.last_value, last_value),
			client_id = CASE WHEN excluded.client_id <> '' THEN excluded.client_id ELSE client_id END
		RETURNING id, pk`, n)
}

func insertReadingsSQL(n int) string {
	return multiRow(`INSERT INTO readings (device, ts, received, value, units, seq) VALUES `, `(?,?,?,?,?,?)`, ``, n)
}

// deviceState is what one batch changes on one device.
type deviceState struct {
	site, typ, units, status, clientID string
	statusSince, firstSeen, lastSeen   int64
	lastValue                          *float64
	pk                                 int64
}

// Apply stores a batch of telemetry events in one transaction: every device
// it mentions is registered or updated once, then its readings are
// inserted. Events are applied in order, so a last will that follows a
// reading leaves the device offline.
func (s *Store) Apply(ctx context.Context, events []telemetry.Event) error {
	if len(events) == 0 {
		return nil
	}
	states := make(map[string]*deviceState, len(events))
	order := make([]string, 0, len(events))
	for i := range events {
		e := &events[i]
		st, ok := states[e.DeviceID]
		if !ok {
			st = &deviceState{firstSeen: ms(e.Time)}
			states[e.DeviceID] = st
			order = append(order, e.DeviceID)
		}
		st.site = e.Site
		if e.Type != "" {
			st.typ = e.Type
		}
		if e.ClientID != "" {
			st.clientID = e.ClientID
		}
		t := ms(e.Time)
		if e.Reading != nil {
			v := e.Reading.Value
			st.lastValue = &v
			st.units = e.Reading.Units
			if st.status != telemetry.StatusOnline {
				st.status, st.statusSince = telemetry.StatusOnline, t
			}
		} else {
			if st.status != e.Status {
				st.status, st.statusSince = e.Status, t
			}
		}
		st.lastSeen = max(st.lastSeen, t)
	}

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()

	// Multi-row statements: modernc's driver parses every statement it
	// runs, so one statement per row would spend most of its time parsing.
	for chunk := range slices.Chunk(order, rowsPerStatement) {
		args := make([]any, 0, len(chunk)*10)
		for _, id := range chunk {
			st := states[id]
			args = append(args, id, st.site, st.typ, st.units, st.status, st.statusSince,
				st.firstSeen, st.lastSeen, st.lastValue, st.clientID)
		}
		rows, err := tx.QueryContext(ctx, upsertDevicesSQL(len(chunk)), args...)
		if err != nil {
			return fmt.Errorf("upsert devices: %w", err)
		}
		for rows.Next() {
			var id string
			var pk int64
			if err := rows.Scan(&id, &pk); err != nil {
				rows.Close()
				return fmt.Errorf("upsert devices: %w", err)
			}
			states[id].pk = pk
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("upsert devices: %w", err)
		}
	}

	args := make([]any, 0, rowsPerStatement*6)
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, insertReadingsSQL(n), args...)
		args, n = args[:0], 0
		if err != nil {
			return fmt.Errorf("insert readings: %w", err)
		}
		return nil
	}
	for i := range events {
		r := events[i].Reading
		if r == nil {
			continue
		}
		args = append(args, states[events[i].DeviceID].pk, ms(r.Time), ms(r.Received), r.Value, r.Units, r.Seq)
		if n++; n == rowsPerStatement {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

const deviceColumns = `id, site, type, units, status, status_since, first_seen, last_seen, last_value, client_id`

func scanDevice(row interface{ Scan(...any) error }) (telemetry.Device, error) {
	var d telemetry.Device
	var since, first, last int64
	var value sql.NullFloat64
	if err := row.Scan(&d.ID, &d.Site, &d.Type, &d.Units, &d.Status, &since, &first, &last, &value, &d.ClientID); err != nil {
		return d, err
	}
	d.StatusSince, d.FirstSeen, d.LastSeen = fromMS(since), fromMS(first), fromMS(last)
	if value.Valid {
		d.LastValue = &value.Float64
	}
	return d, nil
}

// ListDevices returns the devices, by site then id.
func (s *Store) ListDevices(ctx context.Context, f telemetry.DeviceFilter) ([]telemetry.Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices
		WHERE (? = '' OR site = ?) ORDER BY site, id`, f.Site, f.Site)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	out := []telemetry.Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDevice returns one device, or a vigil.ENotFound error.
func (s *Store) GetDevice(ctx context.Context, id string) (telemetry.Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, vigil.Errorf(vigil.ENotFound, "no device %q", id)
	}
	if err != nil {
		return d, fmt.Errorf("get device: %w", err)
	}
	return d, nil
}

// ListReadings returns a device's readings, oldest first: from q.Since on,
// or the latest q.Limit when q.Since is zero.
func (s *Store) ListReadings(ctx context.Context, q telemetry.ReadingQuery) ([]telemetry.Reading, error) {
	var pk int64
	err := s.db.QueryRowContext(ctx, `SELECT pk FROM devices WHERE id = ?`, q.DeviceID).Scan(&pk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, vigil.Errorf(vigil.ENotFound, "no device %q", q.DeviceID)
	}
	if err != nil {
		return nil, fmt.Errorf("list readings: %w", err)
	}
	var rows *sql.Rows
	if q.Since.IsZero() {
		rows, err = s.db.QueryContext(ctx, `SELECT ts, received, value, units, seq FROM (
			SELECT id, ts, received, value, units, seq FROM readings WHERE device = ? ORDER BY ts DESC, id DESC LIMIT ?
		) ORDER BY ts, id`, pk, q.Limit)
	} else {
		rows, err = s.db.QueryContext(ctx, `SELECT ts, received, value, units, seq FROM readings
			WHERE device = ? AND ts >= ? ORDER BY ts, id LIMIT ?`, pk, ms(q.Since), q.Limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list readings: %w", err)
	}
	defer rows.Close()
	out := []telemetry.Reading{}
	for rows.Next() {
		r := telemetry.Reading{DeviceID: q.DeviceID}
		var ts, rec int64
		var seq sql.NullInt64
		if err := rows.Scan(&ts, &rec, &r.Value, &r.Units, &seq); err != nil {
			return nil, fmt.Errorf("list readings: %w", err)
		}
		r.Time, r.Received = fromMS(ts), fromMS(rec)
		if seq.Valid {
			r.Seq = &seq.Int64
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeleteReadingsBefore deletes readings received before cutoff, at most
// chunk rows per transaction so that writers are never held up long. It
// returns how many it deleted.
func (s *Store) DeleteReadingsBefore(ctx context.Context, cutoff time.Time, chunk int) (int64, error) {
	// Ids grow with arrival, so the readings to delete are an id prefix.
	var first sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT id FROM readings WHERE received >= ? ORDER BY id LIMIT 1`, ms(cutoff)).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) {
		if err := s.db.QueryRowContext(ctx, `SELECT MAX(id) + 1 FROM readings`).Scan(&first); err != nil {
			return 0, fmt.Errorf("retention: %w", err)
		}
	} else if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	if !first.Valid {
		return 0, nil // no readings at all
	}
	var total int64
	for {
		res, err := s.db.ExecContext(ctx, `DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE id < ? ORDER BY id LIMIT ?)`, first.Int64, chunk)
		if err != nil {
			return total, fmt.Errorf("retention: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < int64(chunk) {
			return total, nil
		}
	}
}

// MarkStale marks online devices last seen before cutoff offline, and
// returns their ids.
func (s *Store) MarkStale(ctx context.Context, cutoff, now time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `UPDATE devices SET status = ?, status_since = ?
		WHERE status = ? AND last_seen < ? RETURNING id`,
		telemetry.StatusOffline, ms(now), telemetry.StatusOnline, ms(cutoff))
	if err != nil {
		return nil, fmt.Errorf("mark stale devices: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// CountReadings returns how many readings are stored.
func (s *Store) CountReadings(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM readings`).Scan(&n)
	return n, err
}
