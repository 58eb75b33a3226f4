package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/audit"
	"github.com/vigilhq/vigil/internal/watch"
)

// AuditSummary is an audit without its findings, for lists.
type AuditSummary struct {
	ID         int64     `json:"id"`
	Started    time.Time `json:"started"`
	DurationMS int64     `json:"duration_ms"`
	Target     string    `json:"target"`
	Grade      string    `json:"grade"`
	Worst      string    `json:"worst"`
	Findings   int       `json:"findings"` // above info
	Trigger    string    `json:"trigger"`
}

// AuditRecord is a stored audit with its report.
type AuditRecord struct {
	AuditSummary
	Report *audit.Report `json:"report"`
}

// SaveAudit stores an audit's report and returns its id.
func (s *Store) SaveAudit(ctx context.Context, r *audit.Report, trigger string) (int64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range r.Findings {
		if f.Severity > audit.Info {
			n++
		}
	}
	var id int64
	err = s.db.QueryRowContext(ctx, `INSERT INTO audits (started, duration_ms, target, grade, worst, findings, trigger, report)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`, ms(r.Started), r.DurationMS, r.Target, r.Grade, r.Worst().String(), n, trigger, b).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("save audit: %w", err)
	}
	return id, nil
}

const auditColumns = `id, started, duration_ms, target, grade, worst, findings, trigger`

func scanAuditSummary(row scanner) (AuditSummary, error) {
	var a AuditSummary
	var started int64
	err := row.Scan(&a.ID, &started, &a.DurationMS, &a.Target, &a.Grade, &a.Worst, &a.Findings, &a.Trigger)
	a.Started = fromMS(started)
	return a, err
}

// ListAudits returns audits, newest first, without their findings.
func (s *Store) ListAudits(ctx context.Context, limit int) ([]AuditSummary, error) {
	return queryAll(ctx, s.db, "list audits", scanAuditSummary,
		`SELECT `+auditColumns+` FROM audits ORDER BY started DESC, id DESC LIMIT ?`, limitOr(limit, 50))
}

// GetAudit returns an audit with its report; id 0 is the newest.
func (s *Store) GetAudit(ctx context.Context, id int64) (AuditRecord, error) {
	q := `SELECT ` + auditColumns + `, report FROM audits WHERE id = ?`
	args := []any{id}
	if id == 0 {
		q, args = `SELECT `+auditColumns+`, report FROM audits ORDER BY started DESC, id DESC LIMIT 1`, nil
	}
	var rec AuditRecord
	var started int64
	var report string
	err := s.db.QueryRowContext(ctx, q, args...).Scan(&rec.ID, &started, &rec.DurationMS, &rec.Target, &rec.Grade, &rec.Worst,
		&rec.Findings, &rec.Trigger, &report)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, vigil.Errorf(vigil.ENotFound, "no audit %d", id)
	}
	if err != nil {
		return rec, fmt.Errorf("get audit: %w", err)
	}
	rec.Started = fromMS(started)
	rec.Report = &audit.Report{}
	if err := json.Unmarshal([]byte(report), rec.Report); err != nil {
		return rec, fmt.Errorf("audit %d: %w", rec.ID, err)
	}
	return rec, nil
}

// DeleteAuditsBefore keeps the audit history bounded.
func (s *Store) DeleteAuditsBefore(ctx context.Context, cutoff time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM audits WHERE started < ?`, ms(cutoff))
	return err
}

var _ watch.Store = (*Store)(nil)

// SaveProbe records a watch probe.
func (s *Store) SaveProbe(ctx context.Context, p watch.Probe) error {
	sys, _ := json.Marshal(p.Sys)
	if p.Sys == nil {
		sys = []byte("{}")
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO watch_probes (target, at, ok, error, connect_ms, round_trip_ms, sys) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		p.Target, ms(p.At), p.OK, p.Error, p.ConnectMS, p.RoundTripMS, sys)
	if err != nil {
		return fmt.Errorf("save probe: %w", err)
	}
	return nil
}

// ListProbes returns a target's probes since a time, oldest first.
func (s *Store) ListProbes(ctx context.Context, target string, since time.Time, limit int) ([]watch.Probe, error) {
	return queryAll(ctx, s.db, "list probes", func(row scanner) (watch.Probe, error) {
		var p watch.Probe
		var at int64
		var sys string
		err := row.Scan(&p.Target, &at, &p.OK, &p.Error, &p.ConnectMS, &p.RoundTripMS, &sys)
		p.At = fromMS(at)
		json.Unmarshal([]byte(sys), &p.Sys)
		return p, err
	}, `SELECT target, at, ok, error, connect_ms, round_trip_ms, sys FROM watch_probes WHERE target = ? AND at >= ? ORDER BY at LIMIT ?`,
		target, ms(since), limitOr(limit, 10000))
}

// DeleteProbesBefore keeps the probe history bounded.
func (s *Store) DeleteProbesBefore(ctx context.Context, cutoff time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM watch_probes WHERE at < ?`, ms(cutoff))
	return err
}

// SaveOutage inserts an outage, or sets its end.
func (s *Store) SaveOutage(ctx context.Context, o *watch.Outage) error {
	var ended *int64
	if o.End != nil {
		v := ms(*o.End)
		ended = &v
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO watch_outages (target, started, ended, reason) VALUES (?, ?, ?, ?)
		ON CONFLICT (target, started) DO UPDATE SET ended = excluded.ended, reason = excluded.reason`,
		o.Target, ms(o.Start), ended, o.Reason)
	if err != nil {
		return fmt.Errorf("save outage: %w", err)
	}
	return nil
}

// ListOutages returns a target's outages that were under way at or after
// since, oldest first.
func (s *Store) ListOutages(ctx context.Context, target string, since time.Time) ([]watch.Outage, error) {
	return queryAll(ctx, s.db, "list outages", func(row scanner) (watch.Outage, error) {
		var o watch.Outage
		var started int64
		var ended sql.NullInt64
		err := row.Scan(&o.Target, &started, &ended, &o.Reason)
		o.Start = fromMS(started)
		if ended.Valid {
			t := fromMS(ended.Int64)
			o.End = &t
		}
		return o, err
	}, `SELECT target, started, ended, reason FROM watch_outages WHERE target = ? AND (ended IS NULL OR ended >= ?) ORDER BY started`,
		target, ms(since))
}
