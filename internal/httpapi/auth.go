package httpapi

import (
	"context"
	"net/http"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

type ctxKey int

const userKey ctxKey = 0

// UserFrom returns the authenticated user of a request.
func UserFrom(ctx context.Context) *users.User {
	u, _ := ctx.Value(userKey).(*users.User)
	return u
}

// authed requires HTTP Basic credentials of an admin or viewer. Device
// accounts are for MQTT only.
func (s *Server) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, password, ok := r.BasicAuth()
		if !ok {
			s.writeError(w, r, vigil.Errorf(vigil.EUnauthorized, "authentication required"))
			return
		}
		u, err := s.deps.Auth.Authenticate(r.Context(), name, password)
		if err != nil {
			if vigil.ErrorCode(err) == vigil.EUnauthorized {
				s.log.Info("api request refused: wrong username or password", "username", name, "remote", r.RemoteAddr, "path", r.URL.Path)
			}
			s.writeError(w, r, err)
			return
		}
		if u.Role != users.RoleAdmin && u.Role != users.RoleViewer {
			s.writeError(w, r, vigil.Errorf(vigil.EForbidden, "%s accounts cannot use the API", u.Role))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey, u)))
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
