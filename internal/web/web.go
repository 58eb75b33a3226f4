// Package web is Vigil's browser UI: pages rendered with html/template
// around our own plain JavaScript and CSS, all embedded in the binary.
// The pages read and change everything through the documented JSON API
// (the same one scripts use) and follow live updates on its one
// server-sent events stream; a service worker shows Web Push
// notifications. There is no build step and no third-party code.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/vigilhq/vigil/internal/httpapi"
	"github.com/vigilhq/vigil/internal/users"
	"github.com/vigilhq/vigil/internal/version"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// UI serves the pages, the static files and the service worker.
type UI struct {
	log    *slog.Logger
	pages  map[string]*template.Template
	static map[string]asset
}

type asset struct {
	body  []byte
	ctype string
	etag  string
}

// page is a page of the UI: its template, its title and its script.
type page struct {
	name, title, script string
	public              bool
}

var pages = []page{
	{name: "login", title: "Log in", script: "login.js", public: true},
	{name: "overview", title: "Overview", script: "overview.js"},
	{name: "devices", title: "Devices", script: "devices.js"},
	{name: "device", title: "Device", script: "device.js"},
	{name: "events", title: "Events and clips", script: "events.js"},
	{name: "live", title: "Live view", script: "live.js"},
	{name: "agents", title: "Agents", script: "agents.js"},
	{name: "security", title: "Security", script: "security.js"},
	{name: "settings", title: "Settings", script: "settings.js"},
}

// New parses the templates and loads the static files.
func New(log *slog.Logger) (*UI, error) {
	u := &UI{log: log, pages: map[string]*template.Template{}, static: map[string]asset{}}
	for _, p := range pages {
		t, err := template.New("layout.html").ParseFS(templateFS, "templates/layout.html", "templates/"+p.name+".html")
		if err != nil {
			return nil, fmt.Errorf("web template %s: %w", p.name, err)
		}
		u.pages[p.name] = t
	}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		u.static[strings.TrimPrefix(p, "static/")] = asset{body: b, ctype: contentType(p), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".webmanifest":
		return "application/manifest+json"
	}
	return "application/octet-stream"
}

// Handler serves the UI. It expects httpapi to have put the session's
// user in the request's context (httpapi.Deps.Web does).
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", u.page("overview"))
	mux.HandleFunc("GET /login", u.login)
	mux.HandleFunc("GET /devices", u.page("devices"))
	mux.HandleFunc("GET /devices/{id}", u.page("device"))
	mux.HandleFunc("GET /events", u.page("events"))
	mux.HandleFunc("GET /events/{id}", u.page("events"))
	mux.HandleFunc("GET /live", u.page("live"))
	mux.HandleFunc("GET /live/{site}/{camera}", u.page("live"))
	mux.HandleFunc("GET /agents", u.page("agents"))
	mux.HandleFunc("GET /security", u.page("security"))
	mux.HandleFunc("GET /settings", u.page("settings"))
	mux.HandleFunc("GET /static/{file...}", u.serveStatic)
	mux.HandleFunc("GET /sw.js", func(w http.ResponseWriter, r *http.Request) {
		// The service worker lives at the root so that it controls every
		// page; browsers check it for updates on each visit.
		w.Header().Set("Cache-Control", "no-cache")
		u.serveAsset(w, r, "js/sw.js")
	})
	mux.HandleFunc("GET /manifest.webmanifest", func(w http.ResponseWriter, r *http.Request) {
		u.serveAsset(w, r, "manifest.webmanifest")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintln(w, "404 page not found")
	})
	return securityHeaders(mux)
}

// securityHeaders allow nothing but our own scripts, styles and media, and
// no framing. Media may be blob: URLs: live video of RTSP cameras plays
// from a MediaSource, which a <video> reaches by such a URL.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "+
			"script-src 'self'; style-src 'self'; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "+
			"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache") // revalidated by ETag: a new Vigil never serves stale scripts
	u.serveAsset(w, r, r.PathValue("file"))
}

func (u *UI) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := u.static[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", a.etag)
	if r.Header.Get("If-None-Match") == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(a.body)
}

// view is what a page's template gets.
type view struct {
	Page, Title, Script string
	User                string
	Role                string
	Admin               bool
	CSRF                string
	Version             string
	Params              map[string]string // path values, for the page's script
}

// page serves a page to a signed-in user; others go to the login page.
func (u *UI) page(name string) http.HandlerFunc {
	var p page
	for _, x := range pages {
		if x.name == name {
			p = x
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		usr := httpapi.UserFrom(r.Context())
		sess := httpapi.SessionFrom(r.Context())
		if usr == nil || sess == nil {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		v := view{Page: name, Title: p.title, Script: p.script, User: usr.Name, Role: usr.Role, Admin: usr.Role == users.RoleAdmin,
			CSRF: sess.CSRF, Version: version.Version, Params: map[string]string{}}
		for _, k := range []string{"id", "site", "camera"} {
			if s := r.PathValue(k); s != "" {
				v.Params[k] = s
			}
		}
		u.render(w, name, v)
	}
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if httpapi.SessionFrom(r.Context()) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	u.render(w, "login", view{Page: "login", Title: "Log in", Script: "login.js", Version: version.Version, Params: map[string]string{}})
}

// safeNext keeps a post-login redirect on this site: a path, with no
// scheme or host however a browser might read it (browsers drop tabs and
// newlines, take "\\" for "/" and resolve dot segments). The login page's
// script applies the same rule (login.js).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.ContainsAny(next, "\\") || strings.HasPrefix(next, "//") {
		return "/"
	}
	for _, r := range next {
		if r < 0x20 || r == 0x7f {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	// Dot segments resolved (as browsers do), "/.//host" is "//host": a
	// script that takes the resolved path for a URL would leave the site.
	path, _, _ := strings.Cut(next, "?")
	path, _, _ = strings.Cut(path, "#")
	if strings.HasPrefix(resolveDots(path), "//") {
		return "/"
	}
	return next
}

// resolveDots removes the dot segments of an absolute path as the URL
// Standard does (percent-encoded dots included), which differs from Go's
// url.ResolveReference: "/a/..//b" is "//b".
func resolveDots(path string) string {
	segs := strings.Split(path, "/")[1:]
	out := make([]string, 0, len(segs))
	for i, seg := range segs {
		last := i == len(segs)-1
		switch strings.ToLower(seg) {
		case ".", "%2e":
		case "..", ".%2e", "%2e.", "%2e%2e":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
			continue
		}
		if last {
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

func (u *UI) render(w http.ResponseWriter, name string, v view) {
	var b bytes.Buffer
	if err := u.pages[name].Execute(&b, v); err != nil {
		u.log.Error("render page", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}
