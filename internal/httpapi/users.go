package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

// UserAdmin is the user store the API manages (admins only).
type UserAdmin interface {
	ListUsers(ctx context.Context) ([]*users.User, error)
	GetUser(ctx context.Context, name string) (*users.User, error)
	CreateUser(ctx context.Context, u *users.User) error
	UpdateUser(ctx context.Context, u *users.User) error
	DeleteUser(ctx context.Context, name string) error
}

// UserInput is the body of POST /api/v1/users and PATCH /api/v1/users/{name}.
type UserInput struct {
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Password  string   `json:"password"`
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
	// CurrentPassword is required when users change their own password.
	CurrentPassword string `json:"current_password"`
}

func (s *Server) userRoutes(api func(string, handlerFunc)) {
	if s.deps.Users == nil {
		return
	}
	api("GET /api/v1/users", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		list, err := s.deps.Users.ListUsers(r.Context())
		if list == nil {
			list = []*users.User{}
		}
		return list, err
	}))
	api("POST /api/v1/users", admin(s.createUser))
	api("PATCH /api/v1/users/{name}", s.updateUser)
	api("DELETE /api/v1/users/{name}", admin(s.deleteUser))
}

// admin wraps an API handler for admins only.
func admin(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		if u := UserFrom(r.Context()); u == nil || u.Role != users.RoleAdmin {
			return nil, vigil.Errorf(vigil.EForbidden, "only admins can do this")
		}
		return h(w, r)
	}
}

// jsonBody refuses bodies that are not declared JSON (an HTML form cannot
// send application/json).
func jsonBody(r *http.Request) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return vigil.Errorf(vigil.EInvalid, "send the body as JSON (Content-Type: application/json)")
	}
	return nil
}

// decodeJSONLoose decodes a body that may carry fields we do not use (a
// browser's objects).
func decodeJSONLoose(r *http.Request, v any) error {
	if err := jsonBody(r); err != nil {
		return err
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(v); err != nil {
		return vigil.Errorf(vigil.EInvalid, "bad JSON body: %v", err)
	}
	return nil
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if err := jsonBody(r); err != nil {
		return err
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return vigil.Errorf(vigil.EInvalid, "bad JSON body: %v", err)
	}
	return nil
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) (any, error) {
	var in UserInput
	if err := decodeJSON(w, r, &in); err != nil {
		return nil, err
	}
	pub, sub := users.DefaultACL(in.Role)
	if in.Publish != nil || in.Subscribe != nil {
		pub, sub = in.Publish, in.Subscribe
	}
	u := &users.User{Name: in.Name, Role: in.Role, Publish: pub, Subscribe: sub}
	if err := u.Validate(); err != nil {
		return nil, err
	}
	if _, err := s.deps.Users.GetUser(r.Context(), in.Name); err == nil {
		return nil, vigil.Errorf(vigil.EConflict, "user %q already exists", in.Name)
	}
	hash, err := users.HashPassword(in.Password, s.deps.BcryptCost)
	if err != nil {
		return nil, vigil.Errorf(vigil.EInvalid, "%v", err)
	}
	u.PasswordHash = hash
	if err := s.deps.Users.CreateUser(r.Context(), u); err != nil {
		return nil, err
	}
	s.log.Info("user added", "user", u.Name, "role", u.Role, "by", UserFrom(r.Context()).Name)
	saved, err := s.deps.Users.GetUser(r.Context(), u.Name)
	if err != nil {
		return nil, err
	}
	return created{saved}, nil
}

// updateUser changes a user's password, role or ACL. Admins change anyone;
// others only their own password. Changing one's own password takes the
// current one. A changed password ends the user's other sessions.
func (s *Server) updateUser(w http.ResponseWriter, r *http.Request) (any, error) {
	me := UserFrom(r.Context())
	name := r.PathValue("name")
	var in UserInput
	if err := decodeJSON(w, r, &in); err != nil {
		return nil, err
	}
	isAdmin := me.Role == users.RoleAdmin
	if !isAdmin && (name != me.Name || in.Role != "" || in.Publish != nil || in.Subscribe != nil) {
		return nil, vigil.Errorf(vigil.EForbidden, "you can only change your own password")
	}
	u, err := s.deps.Users.GetUser(r.Context(), name)
	if err != nil {
		return nil, err
	}
	// Anyone changing their own password gives the current one (a stolen
	// session is not enough), under the login limiter.
	if name == me.Name && in.Password != "" {
		if _, err := s.checkPassword(r, me.Name, in.CurrentPassword, nil); err != nil {
			if vigil.ErrorCode(err) == vigil.EUnauthorized {
				return nil, vigil.Errorf(vigil.EForbidden, "the current password is wrong")
			}
			return nil, err
		}
	}
	if in.Role != "" && in.Role != u.Role {
		if name == me.Name {
			return nil, vigil.Errorf(vigil.EConflict, "you cannot change your own role")
		}
		u.Role = in.Role
		if in.Publish == nil && in.Subscribe == nil {
			u.Publish, u.Subscribe = users.DefaultACL(in.Role)
		}
	}
	if in.Publish != nil || in.Subscribe != nil {
		u.Publish, u.Subscribe = in.Publish, in.Subscribe
	}
	if in.Password != "" {
		if u.PasswordHash, err = users.HashPassword(in.Password, s.deps.BcryptCost); err != nil {
			return nil, vigil.Errorf(vigil.EInvalid, "%v", err)
		}
	}
	if err := s.deps.Users.UpdateUser(r.Context(), u); err != nil {
		return nil, err
	}
	if s.deps.Forget != nil {
		s.deps.Forget(name)
	}
	if in.Password != "" && s.deps.Sessions != nil {
		var keep *users.Session
		if name == me.Name {
			keep = SessionFrom(r.Context())
		}
		s.deps.Sessions.EndAll(r.Context(), name, keep)
	}
	s.log.Info("user changed", "user", name, "by", me.Name, "password_changed", in.Password != "")
	return s.deps.Users.GetUser(r.Context(), name)
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	if name == UserFrom(r.Context()).Name {
		return nil, vigil.Errorf(vigil.EConflict, "you cannot remove yourself")
	}
	if err := s.deps.Users.DeleteUser(r.Context(), name); err != nil {
		return nil, err
	}
	if s.deps.Forget != nil {
		s.deps.Forget(name)
	}
	s.log.Info("user removed", "user", name, "by", UserFrom(r.Context()).Name)
	return map[string]bool{"ok": true}, nil
}
