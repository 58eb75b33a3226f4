package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

type ctxKey int

const (
	userKey ctxKey = iota
	sessionKey
)

// SessionCookie is the name of the browser session cookie.
const SessionCookie = "vigil_session"

// UserFrom returns the authenticated user of a request.
func UserFrom(ctx context.Context) *users.User {
	u, _ := ctx.Value(userKey).(*users.User)
	return u
}

// SessionFrom returns the browser session of a request, or nil (scripts
// with Basic auth have none).
func SessionFrom(ctx context.Context) *users.Session {
	s, _ := ctx.Value(sessionKey).(*users.Session)
	return s
}

// safeMethod reports whether a request method changes nothing.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// clientIP is the address of the client: the connection's, or, when that
// is a trusted reverse proxy, the nearest address in X-Forwarded-For that
// is not one.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if !s.trusted(host) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if net.ParseIP(h) == nil {
			break
		}
		if !s.trusted(h) {
			return h
		}
	}
	return host
}

// trusted tells whether an address is one of deps.TrustedProxies.
func (s *Server) trusted(addr string) bool {
	ip := net.ParseIP(addr)
	for _, n := range s.deps.TrustedProxies {
		if ip != nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

// secure tells whether the browser reached us over TLS (directly, or
// through a trusted proxy that says so).
func (s *Server) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	return s.trusted(host) && r.Header.Get("X-Forwarded-Proto") == "https"
}

// checkPassword verifies a username and password for the request's
// client under the login limiter that MQTT logins share
// (users.Verifier.Login). A user that allowed (if not nil) refuses is
// told, and counted, exactly as a wrong password.
func (s *Server) checkPassword(r *http.Request, name, password string, allowed func(*users.User) bool) (*users.User, error) {
	addr := s.clientIP(r)
	u, err := s.deps.Auth.Login(r.Context(), addr, name, password)
	var tm *users.TooManyError
	if errors.As(err, &tm) {
		return nil, &tooMany{wait: tm.Wait}
	}
	if err == nil && allowed != nil && !allowed(u) {
		s.deps.Auth.CountFailure(addr, name)
		// The client sees the wrong password's message; the log, the role.
		return nil, fmt.Errorf("a %s account: %w", u.Role, vigil.Errorf(vigil.EUnauthorized, "wrong username or password"))
	}
	return u, err
}

// Identify returns the user of a request: from HTTP Basic credentials
// (scripts) or the session cookie (browsers), with the session. Wrong
// passwords count against the client's address and the username
// (users.Verifier.Login); a browser's state-changing request must carry its
// session's CSRF token in the X-CSRF-Token header.
func (s *Server) Identify(r *http.Request) (*users.User, *users.Session, error) {
	if name, password, ok := r.BasicAuth(); ok {
		u, err := s.checkPassword(r, name, password, nil)
		if err != nil {
			if vigil.ErrorCode(err) == vigil.EUnauthorized {
				s.log.Info("api request refused: wrong username or password", "username", name, "remote", s.clientIP(r), "path", r.URL.Path)
			}
			return nil, nil, err
		}
		return u, nil, nil
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil || s.deps.Sessions == nil {
		return nil, nil, vigil.Errorf(vigil.EUnauthorized, "authentication required")
	}
	sess, u, err := s.deps.Sessions.Lookup(r.Context(), c.Value)
	if err != nil {
		return nil, nil, err
	}
	if !safeMethod(r.Method) && r.Header.Get("X-CSRF-Token") != sess.CSRF {
		return nil, nil, vigil.Errorf(vigil.EForbidden, "missing or wrong CSRF token (send the session's token in X-CSRF-Token)")
	}
	return u, sess, nil
}

// tooMany is a rate-limited login; it maps to 429 with Retry-After.
type tooMany struct{ wait time.Duration }

func (e *tooMany) Error() string {
	return fmt.Sprintf("too many failed logins; try again in %d s", int(math.Ceil(e.wait.Seconds())))
}

// authed requires an admin or viewer (device accounts are for MQTT only).
func (s *Server) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, sess, err := s.Identify(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if u.Role != users.RoleAdmin && u.Role != users.RoleViewer {
			s.writeError(w, r, vigil.Errorf(vigil.EForbidden, "%s accounts cannot use the API", u.Role))
			return
		}
		ctx := context.WithValue(r.Context(), userKey, u)
		if sess != nil {
			ctx = context.WithValue(ctx, sessionKey, sess)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// adminOnly refuses users other than admins.
func adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u := UserFrom(r.Context()); u == nil || u.Role != users.RoleAdmin {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// webRole reports whether a user may use the web UI.
func webRole(u *users.User) bool { return u.Role == users.RoleAdmin || u.Role == users.RoleViewer }

// Me is the body of GET /api/v1/me and of a successful login.
type Me struct {
	User string `json:"user"`
	Role string `json:"role"`
	CSRF string `json:"csrf,omitempty"`
}

// login: POST /api/v1/login {"username","password"}: a session cookie.
// It takes JSON only, which a cross-site form cannot send (no login CSRF).
func (s *Server) login(w http.ResponseWriter, r *http.Request) (any, error) {
	if s.deps.Sessions == nil {
		return nil, vigil.Errorf(vigil.EUnavailable, "sessions are not enabled")
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return nil, vigil.Errorf(vigil.EInvalid, "send the credentials as JSON")
	}
	var in struct{ Username, Password string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil {
		return nil, vigil.Errorf(vigil.EInvalid, "send {\"username\": ..., \"password\": ...}")
	}
	// A device account's right password is refused as a wrong one: the
	// answer tells nothing of which accounts exist, their roles, or
	// whether a device's password was guessed.
	u, err := s.checkPassword(r, in.Username, in.Password, webRole)
	if err != nil {
		if vigil.ErrorCode(err) == vigil.EUnauthorized {
			s.log.Info("login refused: wrong username or password", "username", in.Username, "remote", s.clientIP(r), "reason", err.Error())
		}
		return nil, err
	}
	token, sess, err := s.deps.Sessions.Create(r.Context(), u.Name, r.UserAgent())
	if err != nil {
		return nil, err
	}
	// The cookie lives as long as a session can; the server ends it
	// sooner when it is idle.
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: s.secure(r), Expires: sess.Created.Add(s.deps.Sessions.MaxAge),
	})
	s.log.Info("logged in", "username", u.Name, "remote", s.clientIP(r))
	return Me{User: u.Name, Role: u.Role, CSRF: sess.CSRF}, nil
}

// logout: POST /api/v1/logout ends the session (its CSRF token required,
// so that no other site can log a user out) and clears the cookie, which
// it also does for a session that has already expired.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) (any, error) {
	if c, err := r.Cookie(SessionCookie); err == nil && s.deps.Sessions != nil {
		if sess, _, err := s.deps.Sessions.Lookup(r.Context(), c.Value); err == nil {
			if r.Header.Get("X-CSRF-Token") != sess.CSRF {
				return nil, vigil.Errorf(vigil.EForbidden, "missing or wrong CSRF token (send the session's token in X-CSRF-Token)")
			}
			s.deps.Sessions.Delete(r.Context(), c.Value)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true, MaxAge: -1, SameSite: http.SameSiteLaxMode, Secure: s.secure(r)})
	return map[string]bool{"ok": true}, nil
}

// me: GET /api/v1/me.
func (s *Server) me(w http.ResponseWriter, r *http.Request) (any, error) {
	u := UserFrom(r.Context())
	m := Me{User: u.Name, Role: u.Role}
	if sess := SessionFrom(r.Context()); sess != nil {
		m.CSRF = sess.CSRF
	}
	return m, nil
}
