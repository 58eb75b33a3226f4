package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/telemetry"
)

// ListReadings returns a device's readings, oldest first: from q.Since on,
// or the latest q.Limit when q.Since is zero.
func (s *Store) ListReadings(ctx context.Context, q telemetry.ReadingQuery) ([]telemetry.Reading, error) {
	pk, err := s.devicePK(ctx, q.DeviceID)
	if err != nil {
		return nil, err
	}
	var rows *sql.Rows
	if q.Since.IsZero() {
		rows, err = s.db.QueryContext(ctx, `SELECT ts, received, value, units, seq FROM (
			SELECT id, ts, received, value, units, seq FROM readings WHERE device = ? ORDER BY ts DESC, id DESC LIMIT ?
		) AS latest ORDER BY ts, id`, pk, q.Limit)
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
		// Every reading is old, as of that query; one stored since is
		// not (asking for the newest id of all would take it too).
		if err := s.db.QueryRowContext(ctx, `SELECT MAX(id) + 1 FROM readings WHERE received < ?`, ms(cutoff)).Scan(&first); err != nil {
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

// CountReadings returns how many readings are stored.
func (s *Store) CountReadings(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM readings`).Scan(&n)
	return n, err
}

// ListBuckets summarises a device's readings since a time in buckets of
// step (by device time), oldest first: what a chart over days needs
// rather than every reading.
func (s *Store) ListBuckets(ctx context.Context, deviceID string, since time.Time, step time.Duration) ([]telemetry.Bucket, error) {
	pk, err := s.devicePK(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	stepMS := max(step.Milliseconds(), 1)
	rows, err := s.db.QueryContext(ctx, `SELECT (ts / ?) * ? AS b, AVG(value), MIN(value), MAX(value), COUNT(*) FROM readings
		WHERE device = ? AND ts >= ? GROUP BY b ORDER BY b`, stepMS, stepMS, pk, ms(since))
	if err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	defer rows.Close()
	out := []telemetry.Bucket{}
	for rows.Next() {
		var b telemetry.Bucket
		var at int64
		if err := rows.Scan(&at, &b.Avg, &b.Min, &b.Max, &b.Count); err != nil {
			return nil, fmt.Errorf("list buckets: %w", err)
		}
		b.Time = fromMS(at)
		out = append(out, b)
	}
	return out, rows.Err()
}
