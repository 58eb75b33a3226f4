package httpapi

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/users"
)

// Intrusion is what the API reads of events, clips, sites and agents.
type Intrusion interface {
	ListEvents(ctx context.Context, f detect.EventFilter) ([]detect.Event, error)
	GetEvent(ctx context.Context, id string) (detect.Event, error)
	ListClips(ctx context.Context, f coord.ClipFilter) ([]coord.Clip, error)
	GetClip(ctx context.Context, id string) (coord.Clip, error)
	ListSites(ctx context.Context) ([]detect.Site, error)
	ListHistory(ctx context.Context, limit int) ([]coord.HistoryEntry, error)
}

// SiteControl arms and disarms sites.
type SiteControl interface {
	SetArmed(ctx context.Context, site string, armed bool) (detect.Site, error)
}

func (s *Server) intrusionRoutes(mux *routeMux, api func(string, handlerFunc)) {
	if s.deps.Intrusion == nil {
		return
	}
	api("GET /api/v1/events", s.listEvents)
	api("GET /api/v1/events/{id}", func(w http.ResponseWriter, r *http.Request) (any, error) {
		return s.deps.Intrusion.GetEvent(r.Context(), r.PathValue("id"))
	})
	api("GET /api/v1/clips", s.listClips)
	api("GET /api/v1/clips/{id}", func(w http.ResponseWriter, r *http.Request) (any, error) {
		return s.deps.Intrusion.GetClip(r.Context(), r.PathValue("id"))
	})
	mux.Handle("GET /api/v1/clips/{id}/video", s.authed(http.HandlerFunc(s.clipFile(func(c coord.Clip) (string, string) { return c.File, "video/mp4" }))))
	mux.Handle("GET /api/v1/clips/{id}/thumbnail", s.authed(http.HandlerFunc(s.clipFile(func(c coord.Clip) (string, string) { return c.Thumbnail, "image/jpeg" }))))
	api("GET /api/v1/sites", s.listSites)
	api("POST /api/v1/sites/{site}/arm", s.arm(true))
	api("POST /api/v1/sites/{site}/disarm", s.arm(false))
	api("GET /api/v1/agents", func(w http.ResponseWriter, r *http.Request) (any, error) {
		if s.deps.Agents == nil {
			return map[string]any{}, nil
		}
		return s.deps.Agents(), nil
	})
	api("GET /api/v1/agents/history", func(w http.ResponseWriter, r *http.Request) (any, error) {
		n, err := limit(r, 200, 10000)
		if err != nil {
			return nil, err
		}
		return s.deps.Intrusion.ListHistory(r.Context(), n)
	})
}

func limit(r *http.Request, def, max int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, vigil.Errorf(vigil.EInvalid, "limit must be a whole number from 1 to %d", max)
	}
	return n, nil
}

// listEvents: GET /api/v1/events[?site=&camera=&since=&until=&limit=], newest first.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) (any, error) {
	n, err := limit(r, 100, 10000)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	since, until, err := timeRange(q.Get("since"), q.Get("until"))
	if err != nil {
		return nil, err
	}
	return s.deps.Intrusion.ListEvents(r.Context(), detect.EventFilter{Site: q.Get("site"), Camera: q.Get("camera"), Since: since, Until: until, Limit: n})
}

// timeRange parses since and until: RFC 3339 times, or dates (YYYY-MM-DD,
// local time; until's whole day is included).
func timeRange(since, until string) (time.Time, time.Time, error) {
	parse := func(name, v string, endOfDay bool) (time.Time, error) {
		if v == "" {
			return time.Time{}, nil
		}
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t, nil
		}
		t, err := time.ParseInLocation(time.DateOnly, v, time.Local)
		if err != nil {
			return t, vigil.Errorf(vigil.EInvalid, "%s %q is neither an RFC 3339 time nor a date (YYYY-MM-DD)", name, v)
		}
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	s, err := parse("since", since, false)
	if err != nil {
		return s, s, err
	}
	u, err := parse("until", until, true)
	return s, u, err
}

// listClips: GET /api/v1/clips[?site=&camera=&event=&since=&until=&limit=], newest first.
func (s *Server) listClips(w http.ResponseWriter, r *http.Request) (any, error) {
	n, err := limit(r, 100, 10000)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	since, until, err := timeRange(q.Get("since"), q.Get("until"))
	if err != nil {
		return nil, err
	}
	return s.deps.Intrusion.ListClips(r.Context(), coord.ClipFilter{Site: q.Get("site"), Camera: q.Get("camera"), EventID: q.Get("event"),
		Since: since, Until: until, Limit: n})
}

// SiteView is a site in GET /api/v1/sites.
type SiteView struct {
	detect.Site
	Plan string `json:"plan"`
}

func (s *Server) listSites(w http.ResponseWriter, r *http.Request) (any, error) {
	sites, err := s.deps.Intrusion.ListSites(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]SiteView, len(sites))
	for i, site := range sites {
		out[i] = SiteView{Site: site, Plan: "free"}
		if s.deps.PlanOf != nil {
			out[i].Plan = s.deps.PlanOf(site.Name)
		}
	}
	return out, nil
}

// arm: POST /api/v1/sites/{site}/arm and /disarm (admins).
func (s *Server) arm(armed bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		if u := UserFrom(r.Context()); u == nil || u.Role != users.RoleAdmin {
			return nil, vigil.Errorf(vigil.EForbidden, "only admins can arm or disarm a site")
		}
		site := r.PathValue("site")
		if !vigil.ValidName(site) {
			return nil, vigil.Errorf(vigil.EInvalid, "site %q must be 1-64 letters, digits, '-', '_' or '.'", site)
		}
		if s.deps.Sites == nil {
			return nil, vigil.Errorf(vigil.EUnavailable, "detection is not running")
		}
		site2, err := s.deps.Sites.SetArmed(r.Context(), site, armed)
		if err != nil {
			return nil, err
		}
		plan := "free"
		if s.deps.PlanOf != nil {
			plan = s.deps.PlanOf(site)
		}
		return SiteView{Site: site2, Plan: plan}, nil
	}
}

// clipFile serves a clip's video or thumbnail, with HTTP Range (seeking),
// never cached (commonHeaders): the browser's cache would keep it after
// logout.
func (s *Server) clipFile(pick func(coord.Clip) (string, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.deps.Intrusion.GetClip(r.Context(), r.PathValue("id"))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		rel, ctype := pick(c)
		if c.State != coord.ClipReady || rel == "" {
			s.writeError(w, r, vigil.Errorf(vigil.ENotFound, "clip %s is %s, not ready", c.ID, c.State))
			return
		}
		p := filepath.Join(s.deps.ClipStorage, filepath.FromSlash(rel))
		if !strings.HasPrefix(p, s.deps.ClipStorage+string(filepath.Separator)) {
			s.writeError(w, r, vigil.Errorf(vigil.ENotFound, "no such file"))
			return
		}
		f, err := os.Open(p)
		if err != nil {
			s.writeError(w, r, vigil.Errorf(vigil.ENotFound, "the clip's file is gone"))
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", ctype)
		if r.URL.Query().Get("download") != "" {
			w.Header().Set("Content-Disposition", `attachment; filename="`+c.Camera+"-"+c.Start.Format("20060102-150405")+filepath.Ext(p)+`"`)
		}
		http.ServeContent(w, r, filepath.Base(p), st.ModTime(), f)
	}
}
