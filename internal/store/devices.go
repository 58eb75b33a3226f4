package store

import (
	"context"
	"database/sql"
	"encoding/json"
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

// The store keeps every device's row in memory. A change that matters (a
// new device, a status, type, units, site or client change) is written in
// the batch that brings it; a device's last_seen and last_value, which
// change with every reading, are written at most every checkpointEvery.
// Listing devices overlays the fresher values from memory, so the API is
// never behind; a crash loses at most checkpointEvery of last_seen, never
// a reading.
const checkpointEvery = 5 * time.Second

// device is a device row as kept in memory.
type device struct {
	pk                                     int64
	id, site, typ, units, status, clientID string
	statusSince, firstSeen, lastSeen       int64 // unix ms
	lastValue                              *float64
	meta                                   string // JSON, "" if none
}

func (d *device) toTelemetry() telemetry.Device {
	return telemetry.Device{
		ID: d.id, Site: d.site, Type: d.typ, Units: d.units, Status: d.status,
		StatusSince: fromMS(d.statusSince), FirstSeen: fromMS(d.firstSeen), LastSeen: fromMS(d.lastSeen),
		LastValue: d.lastValue, ClientID: d.clientID, Meta: decodeMeta(d.meta),
	}
}

func decodeMeta(s string) *telemetry.Meta {
	if s == "" {
		return nil
	}
	var m telemetry.Meta
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return &m
}

// deviceCache is the in-memory copy of the devices table.
type deviceCache struct {
	mu         sync.Mutex
	loaded     bool
	refreshed  time.Time // last read of what other nodes wrote (Store.shared)
	byID       map[string]*device
	dirty      map[string]bool // last_seen/last_value not yet written
	checkpoint time.Time       // last write of dirty devices
}

// load reads the devices table once; the caller holds mu.
func (s *Store) loadDevices(ctx context.Context) error {
	c := &s.devs
	if c.loaded {
		return nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT pk, `+deviceColumns+` FROM devices`)
	if err != nil {
		return fmt.Errorf("load devices: %w", err)
	}
	defer rows.Close()
	c.byID, c.dirty = map[string]*device{}, map[string]bool{}
	for rows.Next() {
		var d device
		var value sql.NullFloat64
		if err := rows.Scan(&d.pk, &d.id, &d.site, &d.typ, &d.units, &d.status, &d.statusSince, &d.firstSeen, &d.lastSeen, &value, &d.clientID, &d.meta); err != nil {
			return fmt.Errorf("load devices: %w", err)
		}
		if value.Valid {
			d.lastValue = &value.Float64
		}
		c.byID[d.id] = &d
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load devices: %w", err)
	}
	c.loaded, c.checkpoint, c.refreshed = true, time.Now(), time.Now()
	return nil
}

// freshDevices loads the devices, and on a database other nodes share
// re-reads what they wrote when the copy is older than s.shared: a device
// another node made appears, and a device's newer
// state replaces this node's. The caller holds mu.
func (s *Store) freshDevices(ctx context.Context) error {
	if err := s.loadDevices(ctx); err != nil {
		return err
	}
	c := &s.devs
	if s.shared == 0 || time.Since(c.refreshed) < s.shared {
		return nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT pk, `+deviceColumns+` FROM devices`)
	if err != nil {
		return fmt.Errorf("read devices: %w", err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var d device
		var value sql.NullFloat64
		if err := rows.Scan(&d.pk, &d.id, &d.site, &d.typ, &d.units, &d.status, &d.statusSince, &d.firstSeen, &d.lastSeen, &value, &d.clientID, &d.meta); err != nil {
			return fmt.Errorf("read devices: %w", err)
		}
		if value.Valid {
			d.lastValue = &value.Float64
		}
		old := c.byID[d.id]
		if old == nil || d.lastSeen > old.lastSeen || d.statusSince > old.statusSince || (d.meta != "" && d.meta != old.meta) {
			c.byID[d.id] = &d
		}
		seen[d.id] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read devices: %w", err)
	}
	// Deleted on another node (DeleteDevice).
	for id := range c.byID {
		if !seen[id] && !c.dirty[id] {
			delete(c.byID, id)
		}
	}
	c.refreshed = time.Now()
	return nil
}

// Apply stores a batch of telemetry events in one transaction. Events are
// applied in order, so a last will that follows a reading leaves the device
// offline. On error nothing is changed, in the database or in memory.
func (s *Store) Apply(ctx context.Context, events []telemetry.Event) error {
	if len(events) == 0 {
		return nil
	}
	c := &s.devs
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.loadDevices(ctx); err != nil {
		return err
	}

	// The devices' states after this batch, copied so that a failed
	// transaction leaves the cache as it was.
	next := make(map[string]*device, len(events))
	var order []string
	for i := range events {
		e := &events[i]
		d, ok := next[e.DeviceID]
		if !ok {
			if old := c.byID[e.DeviceID]; old != nil {
				cp := *old
				d = &cp
			} else {
				d = &device{id: e.DeviceID, firstSeen: ms(e.Time)}
			}
			next[e.DeviceID] = d
			order = append(order, e.DeviceID)
		}
		d.site = e.Site
		if e.Type != "" {
			d.typ = e.Type
		}
		if e.Units != "" {
			d.units = e.Units
		}
		if e.ClientID != "" {
			d.clientID = e.ClientID
		}
		t := ms(e.Time)
		status := e.Status
		if e.Meta != nil {
			b, _ := json.Marshal(e.Meta)
			d.meta = string(b)
			if d.status == "" {
				status = telemetry.StatusOnline
			} else {
				status = d.status
			}
		}
		if e.Reading != nil {
			v := e.Reading.Value
			d.lastValue = &v
			if e.Reading.Units != "" {
				d.units = e.Reading.Units
			}
			status = telemetry.StatusOnline
		}
		if d.status != status {
			d.status, d.statusSince = status, t
		}
		d.lastSeen = max(d.lastSeen, t)
	}

	// Write what matters now, and the dirty rest when a checkpoint is due.
	checkpoint := time.Since(c.checkpoint) >= checkpointEvery
	var write []*device
	for _, id := range order {
		d, old := next[id], c.byID[id]
		if old == nil || checkpoint || d.site != old.site || d.typ != old.typ || d.units != old.units ||
			d.status != old.status || d.clientID != old.clientID || d.meta != old.meta {
			write = append(write, d)
		}
	}
	if checkpoint {
		for id := range c.dirty {
			if next[id] == nil {
				write = append(write, c.byID[id])
			}
		}
	}

	if !s.applyPrepared {
		var qs []string
		for _, n := range s.db.d.statementSizes() {
			qs = append(qs, upsertDevicesSQL(n), insertReadingsSQL(n))
		}
		if err := s.db.prepare(ctx, qs...); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		s.applyPrepared = true
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	pks, err := upsertDevices(ctx, tx, write)
	if err != nil {
		return err
	}
	pkOf := func(id string) int64 {
		if pk, ok := pks[id]; ok {
			return pk
		}
		return c.byID[id].pk
	}
	if err := insertReadings(ctx, tx, events, pkOf); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}

	// Committed: the cache takes the new states.
	written := make(map[string]bool, len(write))
	for _, d := range write {
		written[d.id] = true
	}
	for _, id := range order {
		d := next[id]
		d.pk = pkOf(id)
		c.byID[id] = d
		if !written[id] {
			c.dirty[id] = true
		}
	}
	if checkpoint {
		clear(c.dirty)
		c.checkpoint = time.Now()
	} else {
		for id := range written {
			delete(c.dirty, id)
		}
	}
	return nil
}

// Checkpoint writes the last_seen and last_value of every device whose
// latest values are only in memory. Close calls it.
func (s *Store) Checkpoint(ctx context.Context) error {
	c := &s.devs
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded || len(c.dirty) == 0 {
		return nil
	}
	var write []*device
	for id := range c.dirty {
		write = append(write, c.byID[id])
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer tx.Rollback()
	if _, err := upsertDevices(ctx, tx, write); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	clear(c.dirty)
	c.checkpoint = time.Now()
	return nil
}

// upsertDevices writes whole device rows and returns their primary keys.
// Multi-row statements: modernc's driver parses every statement it runs, so
// one statement per row would spend most of its time parsing.
// Several nodes may write one device (a shared database): each column
// keeps the newest of what they know (its status by status_since, its last
// value by last_seen), and a node that never saw a device's type, units,
// last value, meta or client id does not erase them.
func upsertDevices(ctx context.Context, tx *tx, ds []*device) (map[string]int64, error) {
	// In one order on every node: two nodes' transactions lock the same
	// rows without deadlocking each other.
	ds = slices.Clone(ds)
	slices.SortFunc(ds, func(a, b *device) int { return strings.Compare(a.id, b.id) })
	pks := make(map[string]int64, len(ds))
	args := make([]any, 0, min(len(ds), tx.d.maxRows())*11)
	for _, n := range tx.d.statementRows(len(ds)) {
		args = args[:0]
		for _, d := range ds[:n] {
			args = append(args, d.id, d.site, d.typ, d.units, d.status, d.statusSince, d.firstSeen, d.lastSeen, d.lastValue, d.clientID, d.meta)
		}
		ds = ds[n:]
		st, err := tx.prepared(ctx, upsertDevicesSQL(n))
		if err != nil {
			return nil, fmt.Errorf("upsert devices: %w", err)
		}
		rows, err := st.QueryContext(ctx, tx.d.args(args)...)
		if err != nil {
			return nil, fmt.Errorf("upsert devices: %w", err)
		}
		for rows.Next() {
			var id string
			var pk int64
			if err := rows.Scan(&id, &pk); err != nil {
				rows.Close()
				return nil, fmt.Errorf("upsert devices: %w", err)
			}
			pks[id] = pk
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("upsert devices: %w", err)
		}
	}
	return pks, nil
}

// insertReadings inserts the readings among events.
func insertReadings(ctx context.Context, tx *tx, events []telemetry.Event, pkOf func(string) int64) error {
	var rs []int // the events that are readings
	for i := range events {
		if events[i].Reading != nil {
			rs = append(rs, i)
		}
	}
	args := make([]any, 0, min(len(rs), tx.d.maxRows())*6)
	for _, n := range tx.d.statementRows(len(rs)) {
		args = args[:0]
		for _, i := range rs[:n] {
			r := events[i].Reading
			args = append(args, pkOf(events[i].DeviceID), ms(r.Time), ms(r.Received), r.Value, r.Units, r.Seq)
		}
		rs = rs[n:]
		st, err := tx.prepared(ctx, insertReadingsSQL(n))
		if err == nil {
			_, err = st.ExecContext(ctx, tx.d.args(args)...)
		}
		if err != nil {
			return fmt.Errorf("insert readings: %w", err)
		}
	}
	return nil
}

var (
	sqlMu    sync.Mutex
	sqlCache = map[string]string{}
)

// multiRow returns head followed by n copies of the row placeholder group,
// then tail, memoised because batches mostly have the same sizes.
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
	return multiRow(`INSERT INTO devices (`+deviceColumns+`) VALUES `, `(?,?,?,?,?,?,?,?,?,?,?)`, `
		ON CONFLICT (id) DO UPDATE SET
			site = excluded.site,
			type = CASE WHEN excluded.type = '' THEN devices.type ELSE excluded.type END,
			units = CASE WHEN excluded.units = '' THEN devices.units ELSE excluded.units END,
			status = CASE WHEN excluded.status_since >= devices.status_since THEN excluded.status ELSE devices.status END,
			status_since = CASE WHEN excluded.status_since >= devices.status_since THEN excluded.status_since ELSE devices.status_since END,
			last_value = CASE WHEN excluded.last_seen >= devices.last_seen AND excluded.last_value IS NOT NULL THEN excluded.last_value ELSE devices.last_value END,
			last_seen = CASE WHEN excluded.last_seen >= devices.last_seen THEN excluded.last_seen ELSE devices.last_seen END,
			client_id = CASE WHEN excluded.client_id = '' THEN devices.client_id ELSE excluded.client_id END,
			meta = CASE WHEN excluded.meta = '' THEN devices.meta ELSE excluded.meta END
		RETURNING id, pk`, n)
}

func insertReadingsSQL(n int) string {
	// A reading stored before (a redelivery) is left as it is.
	return multiRow(`INSERT INTO readings (device, ts, received, value, units, seq) VALUES `, `(?,?,?,?,?,?)`, ` ON CONFLICT DO NOTHING`, n)
}

const deviceColumns = `id, site, type, units, status, status_since, first_seen, last_seen, last_value, client_id, meta`

// ListDevices returns the devices, by site then id.
func (s *Store) ListDevices(ctx context.Context, f telemetry.DeviceFilter) ([]telemetry.Device, error) {
	c := &s.devs
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.freshDevices(ctx); err != nil {
		return nil, err
	}
	out := []telemetry.Device{}
	for _, d := range c.byID {
		if f.Site == "" || d.site == f.Site {
			out = append(out, d.toTelemetry())
		}
	}
	slices.SortFunc(out, func(a, b telemetry.Device) int {
		if a.Site != b.Site {
			return strings.Compare(a.Site, b.Site)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// GetDevice returns one device, or a vigil.ENotFound error.
func (s *Store) GetDevice(ctx context.Context, id string) (telemetry.Device, error) {
	c := &s.devs
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := s.cachedDevice(ctx, id)
	if err != nil {
		return telemetry.Device{}, err
	}
	if d == nil {
		return telemetry.Device{}, vigil.Errorf(vigil.ENotFound, "no device %q", id)
	}
	return d.toTelemetry(), nil
}

// cachedDevice returns a device from memory, or nil; on a database other
// nodes share, one this node does not know yet is looked for there. The
// caller holds mu.
func (s *Store) cachedDevice(ctx context.Context, id string) (*device, error) {
	if err := s.freshDevices(ctx); err != nil {
		return nil, err
	}
	if d := s.devs.byID[id]; d != nil || s.shared == 0 {
		return d, nil
	}
	// Made by another node since the last refresh, or no such device:
	// one row, not the table (anyone may ask for ids that do not exist).
	var d device
	var value sql.NullFloat64
	err := s.db.QueryRowContext(ctx, `SELECT pk, `+deviceColumns+` FROM devices WHERE id = ?`, id).
		Scan(&d.pk, &d.id, &d.site, &d.typ, &d.units, &d.status, &d.statusSince, &d.firstSeen, &d.lastSeen, &value, &d.clientID, &d.meta)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read device: %w", err)
	}
	if value.Valid {
		d.lastValue = &value.Float64
	}
	s.devs.byID[id] = &d
	return &d, nil
}

// devicePK returns a device's primary key.
func (s *Store) devicePK(ctx context.Context, id string) (int64, error) {
	c := &s.devs
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := s.cachedDevice(ctx, id)
	if err != nil {
		return 0, err
	}
	if d == nil {
		return 0, vigil.Errorf(vigil.ENotFound, "no device %q", id)
	}
	return d.pk, nil
}

// DeleteDevice deletes a device and its readings. A device that reports
// again comes back as new.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	c := &s.devs
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := s.cachedDevice(ctx, id)
	if err != nil {
		return err
	}
	if d == nil {
		return vigil.Errorf(vigil.ENotFound, "no device %q", id)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM readings WHERE device = ?`, d.pk); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE pk = ?`, d.pk); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	delete(c.byID, id)
	delete(c.dirty, id)
	return nil
}

// discovered reports whether a device is read through Home Assistant
// discovery: its availability topics and expire_after say when it is
// offline (a motion sensor may say nothing for hours). Meta is JSON that
// json.Marshal wrote from telemetry.Meta, so the key is exactly this.
func discovered(d *device) bool { return strings.Contains(d.meta, `"discovery":{`) }

// MarkStale marks online devices last seen before cutoff offline, and
// returns their ids.
func (s *Store) MarkStale(ctx context.Context, cutoff, now time.Time) ([]string, error) {
	c := &s.devs
	c.mu.Lock()
	defer c.mu.Unlock()
	// What other nodes saw of the devices counts too.
	if err := s.freshDevices(ctx); err != nil {
		return nil, err
	}
	var ids []string
	var write []*device
	for id, d := range c.byID {
		if d.status == telemetry.StatusOnline && d.lastSeen < ms(cutoff) && !discovered(d) {
			cp := *d
			cp.status, cp.statusSince = telemetry.StatusOffline, ms(now)
			ids = append(ids, id)
			write = append(write, &cp)
		}
	}
	if len(write) == 0 {
		return nil, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("mark stale devices: %w", err)
	}
	defer tx.Rollback()
	if _, err := upsertDevices(ctx, tx, write); err != nil {
		return nil, fmt.Errorf("mark stale devices: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("mark stale devices: %w", err)
	}
	for _, d := range write {
		c.byID[d.id] = d
		delete(c.dirty, d.id)
	}
	slices.Sort(ids)
	return ids, nil
}
