package httpapi

import (
	"context"
	"net/http"
)

// browser serves the web UI (deps.Web) with the session's user, if any,
// in the request's context: the UI decides which pages need one. Only
// the session cookie counts here, never Basic credentials, so a browser
// that once sent Basic auth to the API is not silently signed in.
func (s *Server) browser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(SessionCookie); err == nil && s.deps.Sessions != nil && safeMethod(r.Method) {
			if sess, u, err := s.deps.Sessions.Lookup(r.Context(), c.Value); err == nil {
				ctx := context.WithValue(r.Context(), userKey, u)
				ctx = context.WithValue(ctx, sessionKey, sess)
				r = r.WithContext(ctx)
			}
		}
		next.ServeHTTP(w, r)
	})
}
