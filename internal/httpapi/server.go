// Package httpapi serves Vigil's HTTP API: JSON under /api/v1 (described
// by /api/v1/openapi.json), /healthz, Prometheus /metrics, and the web UI
// (Deps.Web) at every other path. Scripts authenticate with HTTP Basic,
// browsers with a session cookie and a CSRF token; only /healthz, the
// OpenAPI document, login and logout answer without a user.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/cluster"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/users"
)

// Devices is the device and reading store the API reads.
type Devices interface {
	ListDevices(ctx context.Context, f telemetry.DeviceFilter) ([]telemetry.Device, error)
	GetDevice(ctx context.Context, id string) (telemetry.Device, error)
	ListReadings(ctx context.Context, q telemetry.ReadingQuery) ([]telemetry.Reading, error)
	// DeleteDevice deletes a device and its readings (and its Home
	// Assistant configs).
	DeleteDevice(ctx context.Context, id string) error
}

// Authenticator checks a username and password.
type Authenticator interface {
	// Login checks a username and password for a client at addr, under
	// the limiter that MQTT logins share; *users.TooManyError when
	// limited (users.Verifier.Login).
	Login(ctx context.Context, addr, username, password string) (*users.User, error)
	// CountFailure counts a try against addr and username as a wrong
	// password would be.
	CountFailure(addr, username string)
}

// Deps are the components the API serves from.
type Deps struct {
	Devices  Devices
	Auth     Authenticator
	Health   func(ctx context.Context) error // nil error: healthy
	System   func() System                   // GET /api/v1/system
	Gatherer prometheus.Gatherer

	// Hub feeds GET /api/v1/stream (server-sent events).
	Hub *hub.Hub

	// Browser sessions (nil: Basic auth only).
	Sessions *users.Sessions
	// TrustedProxies are reverse proxies whose X-Forwarded-For and
	// X-Forwarded-Proto are believed (http.trusted_proxies).
	TrustedProxies []*net.IPNet
	// ReadTimeout is how long a request's headers and body may take to
	// arrive; 0 means DefaultReadTimeout.
	ReadTimeout time.Duration

	// Intrusion detection (nil: not served).
	Intrusion   Intrusion
	Sites       SiteControl
	Agents      func() coord.View
	PlanOf      func(site string) string
	ClipStorage string
	Cameras     Cameras // live view, clip deletion (nil: not served)
	// CameraTest asks an RTSP camera what it serves (admins; nil: not
	// served).
	CameraTest func(ctx context.Context, site, camera string) (any, error)
	Plans      PlanControl // plans per site (nil: not served)

	// User management (nil: not served). Forget drops a user's cached
	// password check after a change.
	Users      UserAdmin
	Forget     func(name string)
	BcryptCost int

	// Web is the browser UI, served at every path the API does not take
	// (nil: none).
	Web http.Handler

	// Security: self-audits, watched brokers, blocked MQTT clients (nil:
	// not served).
	Security Security

	// Notifications (nil: not served) and the alerts that hold now.
	Notifier    Notifier
	NotifyStore notify.Store
	Alerts      func() []alert.Alert

	// Cluster lists the nodes that share the database (nil: not served).
	Cluster func(ctx context.Context) ([]cluster.Node, error)
	// Discovery: Home Assistant discovery's entities and placements.
	Discovery Discovery
}

// System is the body of GET /api/v1/system.
type System struct {
	Version          string            `json:"version"`
	Started          time.Time         `json:"started"`
	UptimeSeconds    float64           `json:"uptime_s"`
	MQTT             map[string]string `json:"mqtt"` // listener kind -> URL
	HTTP             string            `json:"http"`
	Anonymous        string            `json:"anonymous"`
	ClientsConnected int64             `json:"clients_connected"`
	Demo             bool              `json:"demo"`
}

// Server is the running HTTP server.
type Server struct {
	deps Deps
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	// closing ends long-lived responses (events, live video) at Close,
	// which would otherwise wait for them.
	closing chan struct{}
}

// Open binds addr and starts serving.
func Open(addr string, deps Deps, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	s := &Server{deps: deps, log: log, ln: ln, done: make(chan struct{}), closing: make(chan struct{})}
	// Browsers' cross-site state-changing requests are refused whatever
	// credentials they carry (a session cookie, or Basic credentials a
	// browser remembers); scripts send no Sec-Fetch-Site or Origin.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, vigil.Errorf(vigil.EForbidden, "cross-origin request refused"))
	}))
	readTimeout := deps.ReadTimeout
	if readTimeout <= 0 {
		readTimeout = DefaultReadTimeout
	}
	s.srv = &http.Server{
		Handler:           commonHeaders(cop.Handler(s.routes())),
		ReadHeaderTimeout: 10 * time.Second,
		// A client trickling a body cannot hold a connection (and a
		// handler) for longer. The deadline is lifted once the body is read
		// (net/http's background read), so the event stream and live video
		// last as long as they need.
		ReadTimeout: readTimeout,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server failed", "error", err)
		}
	}()
	log.Info("http listening", "addr", ln.Addr().String())
	return s, nil
}

// DefaultReadTimeout is how long a request's headers and body may take to
// arrive (Vigil's bodies are a few kilobytes of JSON at most).
const DefaultReadTimeout = 30 * time.Second

// commonHeaders are on every answer: no content sniffing (a clip or a
// JSON error is never taken for HTML), and nothing stored by the browser's
// cache (it would outlive a logout) unless the handler says otherwise.
func commonHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting requests and waits up to 5 s for those in flight.
func (s *Server) Close() error {
	close(s.closing)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

func (s *Server) routes() *routeMux {
	mux := &routeMux{ServeMux: http.NewServeMux()}
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /api/v1/openapi.json", serveOpenAPI)
	mux.Handle("GET /metrics", s.authed(promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{})))
	api := func(pattern string, h handlerFunc) {
		mux.Handle(pattern, s.authed(s.json(h)))
	}
	mux.Handle("POST /api/v1/login", s.json(s.login))
	mux.Handle("POST /api/v1/logout", s.json(s.logout))
	api("GET /api/v1/me", s.me)
	mux.Handle("GET /api/v1/stream", s.authed(http.HandlerFunc(s.stream)))
	api("GET /api/v1/devices", s.listDevices)
	api("GET /api/v1/devices/{id}", s.getDevice)
	api("DELETE /api/v1/devices/{id}", s.deleteDevice)
	api("GET /api/v1/devices/{id}/telemetry", s.listTelemetry)
	api("GET /api/v1/devices/{id}/telemetry/summary", s.listBuckets)
	api("GET /api/v1/system", s.system)
	s.intrusionRoutes(mux, api)
	s.cameraRoutes(mux, api)
	s.userRoutes(api)
	s.notifyRoutes(api)
	s.securityRoutes(api)
	s.discoveryRoutes(api)
	// Profiles for admins, as Go servers usually offer them.
	mux.Handle("/debug/pprof/", s.authed(adminOnly(http.HandlerFunc(pprof.Index))))
	mux.Handle("/debug/pprof/profile", s.authed(adminOnly(http.HandlerFunc(pprof.Profile))))
	mux.Handle("/debug/pprof/trace", s.authed(adminOnly(http.HandlerFunc(pprof.Trace))))
	if s.deps.Cluster != nil {
		api("GET /api/v1/cluster", func(w http.ResponseWriter, r *http.Request) (any, error) {
			nodes, err := s.deps.Cluster(r.Context())
			if err != nil {
				return nil, err
			}
			return map[string]any{"nodes": nodes}, nil
		})
	}
	if s.deps.Alerts != nil {
		api("GET /api/v1/alerts", func(w http.ResponseWriter, r *http.Request) (any, error) {
			return s.deps.Alerts(), nil
		})
	}
	api("/api/", func(w http.ResponseWriter, r *http.Request) (any, error) {
		return nil, vigil.Errorf(vigil.ENotFound, "no API endpoint %s %s", r.Method, r.URL.Path)
	})
	if s.deps.Web != nil {
		mux.Handle("/", s.browser(s.deps.Web))
	}
	return mux
}

// streamContext is a request's context that also ends when the server
// closes: long-lived responses use it.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// handlerFunc is an API handler: it returns the value to send as JSON, or
// an error that json maps to a status and a message for the client.
type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

var statusOf = map[string]int{
	vigil.EInvalid:      http.StatusBadRequest,
	vigil.ENotFound:     http.StatusNotFound,
	vigil.EConflict:     http.StatusConflict,
	vigil.EUnauthorized: http.StatusUnauthorized,
	vigil.EForbidden:    http.StatusForbidden,
	vigil.EUnavailable:  http.StatusServiceUnavailable,
	vigil.EInternal:     http.StatusInternalServerError,
}

// created is a handler's answer that made something: 201 Created.
type created struct{ v any }

func (s *Server) json(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := h(w, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if c, ok := v.(created); ok {
			writeJSON(w, http.StatusCreated, c.v)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var tm *tooMany
	if errors.As(err, &tm) {
		w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(tm.wait.Seconds()))))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": tm.Error()})
		return
	}
	code := vigil.ErrorCode(err)
	if code == vigil.EInternal {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	// A Basic challenge makes browsers pop up their own login dialog:
	// scripts get it, pages' own requests (fetch, EventSource) do not.
	if code == vigil.EUnauthorized && (r.Header.Get("Sec-Fetch-Mode") == "" || r.Header.Get("Sec-Fetch-Mode") == "navigate") && r.URL.Path != "/api/v1/login" {
		w.Header().Set("WWW-Authenticate", `Basic realm="vigil", charset="UTF-8"`)
	}
	writeJSON(w, statusOf[code], map[string]string{"error": vigil.ErrorMessage(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if s.deps.Health != nil {
		if err := s.deps.Health(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": vigil.ErrorMessage(err)})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) system(w http.ResponseWriter, r *http.Request) (any, error) {
	if s.deps.System == nil {
		return System{}, nil
	}
	return s.deps.System(), nil
}
