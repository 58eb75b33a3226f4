package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
)

// EnsureSite returns a site, creating it armed if it is new.
func (s *Store) EnsureSite(ctx context.Context, name string) (detect.Site, error) {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO sites (name, armed, updated) VALUES (?, 1, ?) ON CONFLICT (name) DO NOTHING`, name, ms(time.Now())); err != nil {
		return detect.Site{}, fmt.Errorf("ensure site: %w", err)
	}
	return s.GetSite(ctx, name)
}

// GetSite returns a site or a vigil.ENotFound error.
func (s *Store) GetSite(ctx context.Context, name string) (detect.Site, error) {
	site, err := scanSite(s.db.QueryRowContext(ctx, `SELECT name, armed, plan, updated FROM sites WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return site, vigil.Errorf(vigil.ENotFound, "no site %q", name)
	}
	if err != nil {
		return site, fmt.Errorf("get site: %w", err)
	}
	return site, nil
}

// SetArmed arms or disarms a site, creating it if needed.
func (s *Store) SetArmed(ctx context.Context, name string, armed bool) (detect.Site, error) {
	a := 0
	if armed {
		a = 1
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO sites (name, armed, updated) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET armed = excluded.armed, updated = excluded.updated`, name, a, ms(time.Now())); err != nil {
		return detect.Site{}, fmt.Errorf("set armed: %w", err)
	}
	return s.GetSite(ctx, name)
}

// ListSites returns every site by name: those armed, disarmed or given a
// plan, and those only known from their devices (armed, as a new site is).
func (s *Store) ListSites(ctx context.Context) ([]detect.Site, error) {
	return queryAll(ctx, s.db, "list sites", scanSite, `SELECT name, armed, plan, updated FROM sites
		UNION ALL SELECT site, 1, '', MIN(first_seen) FROM devices WHERE site NOT IN (SELECT name FROM sites) GROUP BY site
		ORDER BY 1`)
}

// SetPlan sets a site's plan ("" goes back to vigil.yaml's), creating the
// site (armed) if needed.
func (s *Store) SetPlan(ctx context.Context, name, plan string) (detect.Site, error) {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO sites (name, armed, plan, updated) VALUES (?, 1, ?, ?)
		ON CONFLICT (name) DO UPDATE SET plan = excluded.plan, updated = excluded.updated`, name, plan, ms(time.Now())); err != nil {
		return detect.Site{}, fmt.Errorf("set plan: %w", err)
	}
	s.plans.set(name, plan)
	return s.GetSite(ctx, name)
}

// SitePlan returns the plan set for a site ("" for vigil.yaml's). It is
// answered from memory: the coordinator asks it for every stream and must
// not wait for the database; on a database other nodes share, the plans
// are read again every Store.shared, in the background.
func (s *Store) SitePlan(name string) string { return s.plans.get(name) }

// refreshPlans reads the plans again every d until ctx ends: on a
// database other nodes share, one of them may set a site's plan.
func (s *Store) refreshPlans(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s.loadPlans(rctx) // on error the plans as known
		cancel()
	}
}

// planCache is the sites' plans as stored, kept in memory (SitePlan).
type planCache struct {
	mu sync.Mutex
	m  map[string]string // site -> plan, "" left out
}

func (c *planCache) get(site string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[site]
}

func (c *planCache) set(site, plan string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	if plan == "" {
		delete(c.m, site)
	} else {
		c.m[site] = plan
	}
}

// loadPlans reads the sites' plans into memory.
func (s *Store) loadPlans(ctx context.Context) error {
	sites, err := s.ListSites(ctx)
	if err != nil {
		return fmt.Errorf("read the sites' plans: %w", err)
	}
	for _, site := range sites {
		s.plans.set(site.Name, site.Plan)
	}
	return nil
}

func scanSite(row scanner) (detect.Site, error) {
	var site detect.Site
	var armed int
	var updated int64
	err := row.Scan(&site.Name, &armed, &site.Plan, &updated)
	site.Armed, site.Updated = armed == 1, fromMS(updated)
	return site, err
}

// SaveEvent inserts or replaces an event.
func (s *Store) SaveEvent(ctx context.Context, e *detect.Event) error {
	cams, _ := json.Marshal(nonNil(e.Cameras))
	var ended *int64
	if e.End != nil {
		v := ms(*e.End)
		ended = &v
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO events (id, site, sensor, cameras, started, ended, priority, state, distance)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET cameras = excluded.cameras, ended = excluded.ended,
			priority = excluded.priority, state = excluded.state`,
		e.ID, e.Site, e.Sensor, cams, ms(e.Start), ended, e.Priority, e.State, e.Distance)
	if err != nil {
		return fmt.Errorf("save event: %w", err)
	}
	return nil
}

const eventColumns = `id, site, sensor, cameras, started, ended, priority, state, distance`

func scanEvent(row scanner) (detect.Event, error) {
	var e detect.Event
	var cams string
	var started int64
	var ended sql.NullInt64
	var dist sql.NullFloat64
	if err := row.Scan(&e.ID, &e.Site, &e.Sensor, &cams, &started, &ended, &e.Priority, &e.State, &dist); err != nil {
		return e, err
	}
	json.Unmarshal([]byte(cams), &e.Cameras)
	e.Start = fromMS(started)
	if ended.Valid {
		t := fromMS(ended.Int64)
		e.End = &t
	}
	if dist.Valid {
		e.Distance = &dist.Float64
	}
	return e, nil
}

// GetEvent returns one event.
func (s *Store) GetEvent(ctx context.Context, id string) (detect.Event, error) {
	e, err := scanEvent(s.db.QueryRowContext(ctx, `SELECT `+eventColumns+` FROM events WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, vigil.Errorf(vigil.ENotFound, "no event %q", id)
	}
	return e, err
}

// ListEvents returns events, newest first.
func (s *Store) ListEvents(ctx context.Context, f detect.EventFilter) ([]detect.Event, error) {
	since, until := bounds(f.Since, f.Until)
	return queryAll(ctx, s.db, "list events", scanEvent, `SELECT `+eventColumns+` FROM events
		WHERE (? = '' OR site = ?) AND (? = '' OR `+s.db.d.jsonArrayHas("events.cameras")+`)
			AND started >= ? AND started < ?
		ORDER BY started DESC, id DESC LIMIT ?`, f.Site, f.Site, f.Camera, f.Camera, since, until, limitOr(f.Limit, 100))
}

// bounds turns an optional time range into milliseconds for a query.
func bounds(since, until time.Time) (int64, int64) {
	lo, hi := int64(0), int64(math.MaxInt64)
	if !since.IsZero() {
		lo = ms(since)
	}
	if !until.IsZero() {
		hi = ms(until)
	}
	return lo, hi
}

func limitOr(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// SaveClip inserts or replaces a clip.
func (s *Store) SaveClip(ctx context.Context, c *coord.Clip) error {
	segs, _ := json.Marshal(nonNil(c.Segments))
	var finished *int64
	if c.Finished != nil {
		v := ms(*c.Finished)
		finished = &v
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO clips (id, event_id, site, camera, started, duration_ms, frames, bytes, packets, packets_lost,
			dir, file, thumbnail, codec, state, interrupted, segments, error, finished, pre_roll_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET duration_ms = excluded.duration_ms, frames = excluded.frames, bytes = excluded.bytes,
			packets = excluded.packets, packets_lost = excluded.packets_lost, file = excluded.file, thumbnail = excluded.thumbnail,
			codec = excluded.codec, state = excluded.state, interrupted = excluded.interrupted, segments = excluded.segments,
			error = excluded.error, finished = excluded.finished, pre_roll_ms = excluded.pre_roll_ms`,
		c.ID, c.EventID, c.Site, c.Camera, ms(c.Start), c.DurationMS, c.Frames, c.Bytes, c.Packets, c.PacketsLost,
		c.Dir, c.File, c.Thumbnail, c.Codec, c.State, c.Interrupted, segs, c.Error, finished, c.PreRollMS)
	if err != nil {
		return fmt.Errorf("save clip: %w", err)
	}
	return nil
}

const clipColumns = `id, event_id, site, camera, started, duration_ms, frames, bytes, packets, packets_lost, dir, file, thumbnail, codec, state, interrupted, segments, error, finished, pre_roll_ms`

func scanClip(row scanner) (coord.Clip, error) {
	var c coord.Clip
	var started int64
	var finished sql.NullInt64
	var segs string
	if err := row.Scan(&c.ID, &c.EventID, &c.Site, &c.Camera, &started, &c.DurationMS, &c.Frames, &c.Bytes, &c.Packets, &c.PacketsLost,
		&c.Dir, &c.File, &c.Thumbnail, &c.Codec, &c.State, &c.Interrupted, &segs, &c.Error, &finished, &c.PreRollMS); err != nil {
		return c, err
	}
	c.Start = fromMS(started)
	json.Unmarshal([]byte(segs), &c.Segments)
	if finished.Valid {
		t := fromMS(finished.Int64)
		c.Finished = &t
	}
	return c, nil
}

// GetClip returns one clip.
func (s *Store) GetClip(ctx context.Context, id string) (coord.Clip, error) {
	c, err := scanClip(s.db.QueryRowContext(ctx, `SELECT `+clipColumns+` FROM clips WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return c, vigil.Errorf(vigil.ENotFound, "no clip %q", id)
	}
	return c, err
}

// ListClips returns clips, newest first (not those being deleted).
func (s *Store) ListClips(ctx context.Context, f coord.ClipFilter) ([]coord.Clip, error) {
	since, until := bounds(f.Since, f.Until)
	return s.queryClips(ctx, `SELECT `+clipColumns+` FROM clips
		WHERE state != 'deleting' AND (? = '' OR site = ?) AND (? = '' OR camera = ?) AND (? = '' OR event_id = ?)
			AND started >= ? AND started < ?
		ORDER BY started DESC, id DESC LIMIT ?`, f.Site, f.Site, f.Camera, f.Camera, f.EventID, f.EventID, since, until, limitOr(f.Limit, 100))
}

// ClipsInState returns the clips in a state, oldest first.
func (s *Store) ClipsInState(ctx context.Context, state string) ([]coord.Clip, error) {
	return s.queryClips(ctx, `SELECT `+clipColumns+` FROM clips WHERE state = ? ORDER BY started, id`, state)
}

// OldestClips returns the ready and failed clips of a site beyond the
// newest keep, oldest first: what retention deletes.
func (s *Store) OldestClips(ctx context.Context, site string, keep int) ([]coord.Clip, error) {
	return s.queryClips(ctx, `SELECT `+clipColumns+` FROM clips WHERE site = ? AND state IN ('ready', 'failed')
		ORDER BY started DESC, id DESC LIMIT 9223372036854775807 OFFSET ?`, site, keep)
}

// OldestClipsAll returns the oldest ready or failed clips of all sites.
func (s *Store) OldestClipsAll(ctx context.Context, limit int) ([]coord.Clip, error) {
	return s.queryClips(ctx, `SELECT `+clipColumns+` FROM clips WHERE state IN ('ready', 'failed') ORDER BY started, id LIMIT ?`, limit)
}

func (s *Store) queryClips(ctx context.Context, q string, args ...any) ([]coord.Clip, error) {
	return queryAll(ctx, s.db, "list clips", scanClip, q, args...)
}

// SetClipState changes a clip's state.
func (s *Store) SetClipState(ctx context.Context, id, state string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE clips SET state = ? WHERE id = ?`, state, id)
	return err
}

// DeleteClip removes a clip's row.
func (s *Store) DeleteClip(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM clips WHERE id = ?`, id)
	return err
}

// maxHistory is how many of the coordinator's decisions the agent history
// keeps: a site whose cameras record all day makes thousands a day, and
// the agents page shows the newest 200.
const maxHistory = 10000

// AddHistory records a coordinator decision. The history keeps the newest
// maxHistory (trimmed every 100 decisions, as the delivery log is).
func (s *Store) AddHistory(ctx context.Context, h *coord.HistoryEntry) error {
	err := s.db.QueryRowContext(ctx, `INSERT INTO agent_history (at, action, agent, camera, reason, agents, streams, queued) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		ms(h.At), h.Action, h.Agent, h.Camera, h.Reason, h.Agents, h.Streams, h.Queued).Scan(&h.ID)
	if err != nil {
		return fmt.Errorf("add history: %w", err)
	}
	if h.ID > s.historyKeep && h.ID%100 == 0 {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM agent_history WHERE id <= ?`, h.ID-s.historyKeep); err != nil {
			return fmt.Errorf("trim history: %w", err)
		}
	}
	return nil
}

// ListHistory returns the newest decisions, newest first.
func (s *Store) ListHistory(ctx context.Context, limit int) ([]coord.HistoryEntry, error) {
	return queryAll(ctx, s.db, "list history", func(row scanner) (coord.HistoryEntry, error) {
		var h coord.HistoryEntry
		var at int64
		err := row.Scan(&h.ID, &at, &h.Action, &h.Agent, &h.Camera, &h.Reason, &h.Agents, &h.Streams, &h.Queued)
		h.At = fromMS(at)
		return h, err
	}, `SELECT id, at, action, agent, camera, reason, agents, streams, queued FROM agent_history ORDER BY id DESC LIMIT ?`, limitOr(limit, 200))
}

// UnfinishedEvents returns events still recording or queued (after a
// crash, the coordinator closes them).
func (s *Store) UnfinishedEvents(ctx context.Context) ([]detect.Event, error) {
	return queryAll(ctx, s.db, "unfinished events", scanEvent, `SELECT `+eventColumns+` FROM events WHERE state IN (?, ?)`,
		detect.EventRecording, detect.EventQueued)
}
