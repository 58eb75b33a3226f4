package coord

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hub"
)

// finishClips makes each finished stream's segments into one clip file,
// then applies retention. It runs on its own goroutine, one clip at a
// time, in `vigil up`: transcoding never runs in an agent, so it can never
// make ingest drop frames.
func (c *Coordinator) finishClips() {
	for id := range c.jobs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		cl, err := c.store.GetClip(ctx, id)
		if err == nil {
			c.finishClip(ctx, &cl)
			c.Retention(ctx, cl.Site)
			done := cl
			c.do(func() { c.clipFinished(done) })
		} else {
			c.log.Error("finish clip", "clip", id, "error", err)
		}
		cancel()
	}
}

func (c *Coordinator) finishClip(ctx context.Context, cl *Clip) {
	dir := filepath.Join(c.cfg.Storage, filepath.FromSlash(cl.Dir))
	// The segments the coordinator assigned, plus any on disk it did not
	// hear of (a crash between assigning and saving).
	segs := slices.Clone(cl.Segments)
	if found, _ := filepath.Glob(filepath.Join(dir, "seg-*.mp4")); len(found) > 0 {
		for _, f := range found {
			if b := filepath.Base(f); !slices.Contains(segs, b) {
				segs = append(segs, b)
			}
		}
		sort.Strings(segs)
	}
	paths := make([]string, len(segs))
	for i, s := range segs {
		paths[i] = filepath.Join(dir, s)
	}
	start := time.Now()
	fin := *c.finisher
	if !c.cfg.Recording.Transcode {
		fin.FFmpeg = ""
	}
	info, err := fin.Finish(ctx, paths, filepath.Join(dir, "clip.mp4"), filepath.Join(dir, "thumb.jpg"))
	c.m.finishSeconds.Observe(time.Since(start).Seconds())
	now := c.now()
	cl.Finished = &now
	cl.Segments = segs
	if err != nil {
		cl.State, cl.Error = ClipFailed, err.Error()
		c.log.Error("clip failed", "clip", cl.ID, "camera", cl.Camera, "error", err)
	} else {
		cl.State = ClipReady
		cl.DurationMS, cl.Frames, cl.Bytes, cl.Codec = info.Duration.Milliseconds(), info.Frames, info.Bytes, info.Codec
		cl.Interrupted = cl.Interrupted || info.Truncated
		cl.File = filepath.ToSlash(filepath.Join(cl.Dir, "clip.mp4"))
		cl.Thumbnail = filepath.ToSlash(filepath.Join(cl.Dir, "thumb.jpg"))
		// The segments served their purpose; the clip replaces them.
		for _, p := range paths {
			if os.Getenv("VIGIL_DEBUG_KEEP") == "" {
				os.Remove(p)
			}
		}
		c.log.Info("clip ready", "clip", cl.ID, "camera", cl.Camera, "duration", info.Duration.Round(100*time.Millisecond),
			"frames", info.Frames, "codec", info.Codec, "interrupted", cl.Interrupted, "took", time.Since(start).Round(time.Millisecond))
	}
	c.m.clips.WithLabelValues(cl.State).Inc()
	if err := c.store.SaveClip(ctx, cl); err != nil {
		c.log.Error("save clip", "clip", cl.ID, "error", err)
	}
	c.changed(hub.EventClip, *cl)
}

// PlanChanged applies retention to a site whose plan changed (a smaller
// plan keeps fewer clips), on a goroutine that Close waits for.
func (c *Coordinator) PlanChanged(site string) {
	// Started from the loop, which Close stops before it waits for c.wg.
	c.do(func() {
		c.wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c.Retention(ctx, site)
		})
	})
}

// Retention deletes a site's oldest clips beyond its plan's max_clips, and
// the oldest of all while the clip storage exceeds retention.max_bytes.
func (c *Coordinator) Retention(ctx context.Context, site string) {
	c.retMu.Lock()
	defer c.retMu.Unlock()
	_, plan := c.planFor(site)
	old, err := c.store.OldestClips(ctx, site, plan.MaxClips)
	if err != nil {
		c.log.Error("retention", "site", site, "error", err)
		return
	}
	for _, cl := range old {
		c.deleteClip(ctx, cl, "more than max_clips")
	}
	c.enforceQuota(ctx)
}

// quotaEvery is how often the disk quota is checked while clips record:
// segments grow on disk long before their clip is finished.
const quotaEvery = 10 * time.Second

// watchQuota applies the disk quota every quotaEvery until the
// coordinator stops.
func (c *Coordinator) watchQuota() {
	if c.cfg.Retention.MaxBytes <= 0 {
		return
	}
	t := time.NewTicker(quotaEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.retMu.Lock()
			c.enforceQuota(context.Background())
			c.retMu.Unlock()
		}
	}
}

// enforceQuota deletes the oldest finished clips of all sites while the
// clip storage holds more than retention.max_bytes: everything on disk
// counts (clips, thumbnails, the segments of clips still recording or
// finishing). Called with retMu held.
func (c *Coordinator) enforceQuota(ctx context.Context) {
	quota := c.cfg.Retention.MaxBytes
	if quota <= 0 {
		return
	}
	total, err := diskUsage(c.cfg.Storage)
	if err != nil {
		c.log.Error("disk quota: cannot measure the clip storage", "error", err)
		return
	}
	for total > quota {
		oldest, err := c.store.OldestClipsAll(ctx, 1)
		if err != nil || len(oldest) == 0 {
			c.refusals.Warn("quota", "the clip storage is over retention.max_bytes and no finished clip is left to delete",
				"bytes", total, "max_bytes", quota)
			return
		}
		n, _ := diskUsage(filepath.Join(c.cfg.Storage, filepath.FromSlash(oldest[0].Dir)))
		c.deleteClip(ctx, oldest[0], "over the disk quota")
		if _, err := c.store.GetClip(ctx, oldest[0].ID); err == nil {
			return // not deleted (logged): try again later
		}
		total -= n
	}
}

// diskUsage returns the bytes of the regular files under root.
func diskUsage(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted meanwhile
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n, err
}

// deleteClip removes a clip, never leaving half of one: the row is marked
// deleting (and so hidden) first, the files go, then the row. A crash in
// between is finished at the next start.
func (c *Coordinator) deleteClip(ctx context.Context, cl Clip, why string) {
	if err := c.store.SetClipState(ctx, cl.ID, ClipDeleting); err != nil {
		c.log.Error("delete clip", "clip", cl.ID, "error", err)
		return
	}
	dir := filepath.Join(c.cfg.Storage, filepath.FromSlash(cl.Dir))
	if err := os.RemoveAll(dir); err != nil {
		c.log.Error("delete clip files; retried at the next start", "clip", cl.ID, "error", err)
		return
	}
	// Empty day, camera and site directories go too.
	for p := filepath.Dir(dir); strings.HasPrefix(p, c.cfg.Storage+string(filepath.Separator)); p = filepath.Dir(p) {
		if os.Remove(p) != nil {
			break
		}
	}
	if err := c.store.DeleteClip(ctx, cl.ID); err != nil {
		c.log.Error("delete clip row", "clip", cl.ID, "error", err)
		return
	}
	c.m.deleted.Inc()
	c.log.Info("clip deleted", "clip", cl.ID, "site", cl.Site, "why", why)
}

// recover finishes what a previous run left: deletions, and clips that
// were recording or finishing when it stopped (kept, marked interrupted).
func (c *Coordinator) recover(ctx context.Context) {
	if del, err := c.store.ClipsInState(ctx, ClipDeleting); err == nil {
		for _, cl := range del {
			c.deleteClip(ctx, cl, "left by the previous run")
		}
	}
	// Both lists are read before either is changed: a recording clip
	// becomes finishing here and must not be found again as one (a second
	// job would find its segments merged and gone, and fail it).
	recording, err1 := c.store.ClipsInState(ctx, ClipRecording)
	finishing, err2 := c.store.ClipsInState(ctx, ClipFinishing)
	if err := errors.Join(err1, err2); err != nil {
		c.log.Error("recover clips: they are finished at the next start", "error", err)
	}
	if c.cfg.AdoptAfter > 0 {
		c.recoverToAdopt(ctx, recording, finishing)
		return
	}
	for _, cl := range recording {
		cl.Interrupted = true
		cl.State = ClipFinishing
		if err := c.store.SaveClip(ctx, &cl); err != nil {
			c.log.Error("recover clip", "clip", cl.ID, "error", err)
			continue
		}
		c.jobs <- cl.ID
	}
	for _, cl := range finishing {
		c.jobs <- cl.ID
	}
	evs, err := c.store.UnfinishedEvents(ctx)
	if err != nil {
		return
	}
	for i := range evs {
		ev := evs[i]
		ev.State = detect.EventPartial
		now := c.now()
		ev.End = &now
		if err := c.store.SaveEvent(ctx, &ev); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Warn("recover event", "event", ev.ID, "error", err)
		}
	}
}

// recoverToAdopt is recover among several nodes: the clips being recorded
// wait, as orphans, for the agents that may still record them (adopt.go);
// the events of those clips stay open, the others are closed as partial.
func (c *Coordinator) recoverToAdopt(ctx context.Context, recording, finishing []Clip) {
	for _, cl := range finishing {
		c.jobs <- cl.ID
	}
	evs, err := c.store.UnfinishedEvents(ctx)
	if err != nil {
		c.log.Error("recover events", "error", err)
	}
	open := map[string]*detect.Event{}
	for i := range evs {
		open[evs[i].ID] = &evs[i]
	}
	until := c.now().Add(c.cfg.AdoptAfter)
	orphans := map[string]*orphan{}
	held := map[string]bool{}
	for _, cl := range recording {
		orphans[cl.Dir] = &orphan{clip: cl, ev: open[cl.EventID], until: until}
		held[cl.EventID] = true
	}
	c.do(func() { maps.Copy(c.orphans, orphans) })
	for _, ev := range evs {
		if held[ev.ID] {
			continue
		}
		ev.State = detect.EventPartial
		now := c.now()
		ev.End = &now
		if err := c.store.SaveEvent(ctx, &ev); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Warn("recover event", "event", ev.ID, "error", err)
		}
	}
}

// DeleteClip deletes a finished clip (an admin's request); clips still
// recording or finishing cannot be deleted.
func (c *Coordinator) DeleteClip(ctx context.Context, id, by string) error {
	cl, err := c.store.GetClip(ctx, id)
	if err != nil {
		return err
	}
	if cl.State != ClipReady && cl.State != ClipFailed {
		return vigil.Errorf(vigil.EConflict, "clip %s is %s; it can be deleted once it is finished", id, cl.State)
	}
	c.deleteClip(ctx, cl, "deleted by "+by)
	if cl, err := c.store.GetClip(ctx, id); err == nil {
		return fmt.Errorf("clip %s could not be deleted (it is %s); see the log", id, cl.State)
	}
	c.changed(hub.EventClipDeleted, cl)
	return nil
}
