package httpapi

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/ingest"
)

// Cameras is the coordinator's side of cameras, live view and clips.
type Cameras interface {
	Cameras(ctx context.Context) ([]coord.CameraView, error)
	Live(ctx context.Context, site, camera string) (coord.StreamView, error)
	CameraStream(ctx context.Context, site, camera string) (coord.StreamView, bool, error)
	DeleteClip(ctx context.Context, id, by string) error
	// Watch counts a viewer of a stream until release.
	Watch(streamID string) (release func())
}

// PlanControl lists plans and sets a site's.
type PlanControl interface {
	Plans() map[string]conf.Plan
	SetPlan(ctx context.Context, site, plan string) (detect.Site, error)
}

// LiveView is the answer to POST .../live.
type LiveView struct {
	coord.StreamView
	// MJPEG is where the pictures are, for an <img> or a script (JPEG
	// cameras); MP4 where the video is, as fragmented MP4 for Media Source
	// Extensions (RTSP cameras: their H.264 or H.265 as they sent it).
	MJPEG string `json:"mjpeg,omitempty"`
	MP4   string `json:"mp4,omitempty"`
}

func (s *Server) cameraRoutes(mux *routeMux, api func(string, handlerFunc)) {
	if s.deps.Cameras != nil {
		api("GET /api/v1/cameras", func(w http.ResponseWriter, r *http.Request) (any, error) {
			cams, err := s.deps.Cameras.Cameras(r.Context())
			return cams, coordError(err)
		})
		api("POST /api/v1/cameras/{site}/{camera}/live", s.startLive)
		mux.Handle("GET /api/v1/cameras/{site}/{camera}/live.mjpeg", s.authed(http.HandlerFunc(s.liveMJPEG)))
		mux.Handle("GET /api/v1/cameras/{site}/{camera}/live.mp4", s.authed(http.HandlerFunc(s.liveMP4)))
		if s.deps.CameraTest != nil {
			api("POST /api/v1/cameras/{site}/{camera}/test", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
				return s.deps.CameraTest(r.Context(), r.PathValue("site"), r.PathValue("camera"))
			}))
		}
		api("DELETE /api/v1/clips/{id}", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
			if err := s.deps.Cameras.DeleteClip(r.Context(), r.PathValue("id"), UserFrom(r.Context()).Name); err != nil {
				return nil, err
			}
			return map[string]bool{"ok": true}, nil
		}))
	}
	if s.deps.Plans != nil {
		api("GET /api/v1/plans", func(w http.ResponseWriter, r *http.Request) (any, error) {
			return s.deps.Plans.Plans(), nil
		})
		api("PUT /api/v1/sites/{site}/plan", admin(s.setPlan))
	}
}

func coordError(err error) error {
	switch {
	case errors.Is(err, coord.ErrNoCamera):
		return vigil.Errorf(vigil.ENotFound, "%v", err)
	case errors.Is(err, coord.ErrClosing):
		return vigil.Errorf(vigil.EUnavailable, "%v", err)
	}
	return err
}

// startLive: POST /api/v1/cameras/{site}/{camera}/live asks the camera to
// stream for live view (unless it is streaming already).
func (s *Server) startLive(w http.ResponseWriter, r *http.Request) (any, error) {
	site, cam := r.PathValue("site"), r.PathValue("camera")
	v, err := s.deps.Cameras.Live(r.Context(), site, cam)
	if err != nil {
		return nil, coordError(err)
	}
	s.log.Info("live view", "site", site, "camera", cam, "stream", v.ID, "user", UserFrom(r.Context()).Name)
	base := "/api/v1/cameras/" + url.PathEscape(site) + "/" + url.PathEscape(cam)
	if v.Kind == ingest.KindRTSP || v.Kind == ingest.KindRing {
		return LiveView{StreamView: v, MP4: base + "/live.mp4"}, nil
	}
	return LiveView{StreamView: v, MJPEG: base + "/live.mjpeg"}, nil
}

// codecHeader is what an agent may say of a live MP4's codecs.
var codecHeader = regexp.MustCompile(`^video/mp4; codecs="[A-Za-z0-9.,]{1,64}"$`)

// liveMP4: GET /api/v1/cameras/{site}/{camera}/live.mp4 relays an RTSP
// camera's stream from its agent as fragmented MP4 (Media Source
// Extensions), with X-Vigil-Codec (the SourceBuffer type) and
// X-Vigil-Origin (the wall-clock time of the stream's 0, Unix ms).
func (s *Server) liveMP4(w http.ResponseWriter, r *http.Request) {
	s.liveRelay(w, r, ".mp4", func(resp *http.Response) (http.Header, error) {
		codec, origin := resp.Header.Get("X-Vigil-Codec"), resp.Header.Get("X-Vigil-Origin")
		if _, err := strconv.ParseInt(origin, 10, 64); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "video/mp4" || !codecHeader.MatchString(codec) || err != nil {
			return nil, fmt.Errorf("agent answered %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return http.Header{
			"Content-Type":  {"video/mp4"},
			"X-Vigil-Codec": {codec}, "X-Vigil-Origin": {origin},
		}, nil
	})
}

// liveMJPEG: GET /api/v1/cameras/{site}/{camera}/live.mjpeg relays the
// camera's current stream from its agent as multipart JPEG. A stream still
// starting is waited for (up to 15 s), so a page may ask for live view and
// open this at once.
func (s *Server) liveMJPEG(w http.ResponseWriter, r *http.Request) {
	s.liveRelay(w, r, "", func(resp *http.Response) (http.Header, error) {
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != http.StatusOK || err != nil || mt != "multipart/x-mixed-replace" || params["boundary"] == "" {
			return nil, fmt.Errorf("agent answered %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return http.Header{"Content-Type": {mime.FormatMediaType(mt, map[string]string{"boundary": params["boundary"]})}}, nil
	})
}

// liveRelay relays a camera's live stream from its agent (at
// /live/<stream><suffix>); check vets the agent's answer and returns the
// headers that pass.
func (s *Server) liveRelay(w http.ResponseWriter, r *http.Request, suffix string, check func(*http.Response) (http.Header, error)) {
	site, cam := r.PathValue("site"), r.PathValue("camera")
	ctx, cancel := s.streamContext(r)
	defer cancel()
	deadline := time.Now().Add(15 * time.Second)
	var v coord.StreamView
	for {
		var ok bool
		var err error
		v, ok, err = s.deps.Cameras.CameraStream(ctx, site, cam)
		if err != nil {
			s.writeError(w, r, coordError(err))
			return
		}
		if !ok {
			s.writeError(w, r, vigil.Errorf(vigil.ENotFound, "camera %s/%s is not streaming; POST to its /live to start", site, cam))
			return
		}
		if v.State == "streaming" && v.AgentHTTP != "" {
			break
		}
		if time.Now().After(deadline) {
			s.writeError(w, r, vigil.Errorf(vigil.EUnavailable, "the stream of %s/%s is still %s", site, cam, v.State))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer s.deps.Cameras.Watch(v.ID)()
	target := &url.URL{Scheme: "http", Host: v.AgentHTTP, Path: "/live/" + url.PathEscape(v.ID) + suffix, RawQuery: "token=" + url.QueryEscape(v.Token)}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = ""
			pr.Out.Header = http.Header{} // no cookies or credentials to the agent
		},
		FlushInterval: -1,
		// Only the agent's pictures pass, with headers of our own: nothing
		// an agent says can become a page or a cookie on Vigil's origin.
		ModifyResponse: func(resp *http.Response) error {
			h, err := check(resp)
			if err != nil {
				return err
			}
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Content-Security-Policy", "sandbox")
			resp.Header = h
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if ctx.Err() != nil {
				return // the viewer left, or the server is closing
			}
			s.log.Warn("live view relay", "camera", cam, "agent", v.Agent, "error", err)
			s.writeError(w, r, vigil.Errorf(vigil.EUnavailable, "the agent of %s/%s does not answer", site, cam))
		},
	}
	proxy.ServeHTTP(w, r.WithContext(ctx))
}

// setPlan: PUT /api/v1/sites/{site}/plan {"plan": "plus"} ("" goes back to
// vigil.yaml's).
func (s *Server) setPlan(w http.ResponseWriter, r *http.Request) (any, error) {
	site := r.PathValue("site")
	if !vigil.ValidName(site) {
		return nil, vigil.Errorf(vigil.EInvalid, "site %q must be 1-64 letters, digits, '-', '_' or '.'", site)
	}
	var in struct {
		Plan string `json:"plan"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		return nil, err
	}
	st, err := s.deps.Plans.SetPlan(r.Context(), site, in.Plan)
	if err != nil {
		return nil, err
	}
	s.log.Info("site plan set", "site", site, "plan", in.Plan, "by", UserFrom(r.Context()).Name)
	plan := in.Plan
	if s.deps.PlanOf != nil {
		plan = s.deps.PlanOf(site)
	}
	return SiteView{Site: st, Plan: plan}, nil
}
