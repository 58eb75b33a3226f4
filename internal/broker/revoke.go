package broker

import (
	"context"
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

// UserLookup is an Authenticator that can also read a user as it is now.
// The broker then checks the users of its sessions every sessionCheck and
// ends those of users that were removed or changed by anyone (the API,
// `vigil user` in another process, a direct edit of the database).
type UserLookup interface {
	LookupUser(ctx context.Context, name string) (*users.User, error)
}

// sessionCheck is how often the sessions' users are checked against the
// store. Changes made through the API end sessions at once (EndSessions).
const sessionCheck = 30 * time.Second

// errRevoked ends the sessions of a removed or changed user.
var errRevoked = errors.New("the user was removed or changed")

// EndSessions ends every session of the user name, connected or waiting
// for its client: its role, ACL or password changed, or it was removed.
// Each client must log in again, and gets what holds now: sessions are not
// resumed (a persistent session's subscriptions were granted under the
// old ACL, so they go with it), and last wills are dropped (a revoked
// login says nothing more; but see endSession). It returns the number of
// sessions ended.
func (s *Server) EndSessions(name string) int {
	if name == "" || name == internalUser {
		return 0
	}
	n := 0
	for _, cl := range s.mochi.Clients.GetAll() {
		if string(cl.Properties.Username) == name && !cl.Net.Inline {
			s.endSession(cl)
			n++
		}
	}
	if n > 0 {
		s.log.Info("mqtt sessions ended: the user was removed or changed", "username", name, "sessions", n)
	}
	return n
}

// endSession ends one client's session (see EndSessions). A will mochi
// already holds back for its delay is not recalled: it was held to the
// ACL of its time when the client connected.
func (s *Server) endSession(cl *mqtt.Client) {
	if cl.Closed() {
		s.expireSession(cl, errRevoked)
		return
	}
	// The session goes when the connection's goroutine ends (the auth
	// hook's OnDisconnect), so that no packet it is still handling
	// subscribes again after the clean-up; its will goes nowhere (the
	// auth hook's OnWill).
	s.auth.revoked.Store(cl, struct{}{})
	kick(s.mochi, cl, packets.ErrAdministrativeAction)
}

// expireSession removes a client's session as mochi does when a clean
// session ends: the hooks forget it (persistence deletes it), its
// subscriptions and in-flight messages go, and the registry entry if it is
// still this client's.
func (s *Server) expireSession(cl *mqtt.Client, err error) {
	for _, h := range s.hooks {
		s.disconnected(h, cl, err, true)
	}
	cl.ClearInflights()
	s.mochi.UnsubscribeClient(cl)
	if cur, ok := s.mochi.Clients.Get(cl.ID); ok && cur == cl {
		s.mochi.Clients.Delete(cl.ID)
	}
}

// checkSessions ends each session whose user no longer exists, or has
// changed since that session logged in (other sessions of the same user,
// logged in since, stay), and makes the verifier forget those users'
// cached passwords.
func (s *Server) checkSessions(ctx context.Context, lookup UserLookup) {
	current := map[string]*users.User{} // nil: removed
	var stale []*mqtt.Client
	s.auth.clients.Range(func(k, v any) bool {
		cl, u := k.(*mqtt.Client), v.(*users.User)
		if u == s.auth.anonymousUser {
			return true
		}
		if _, own := s.auth.own.Load(cl); own {
			return true
		}
		cur, seen := current[u.Name]
		if !seen {
			var err error
			cur, err = lookup.LookupUser(ctx, u.Name)
			switch {
			case vigil.ErrorCode(err) == vigil.ENotFound:
				cur = nil
			case err != nil:
				s.log.Debug("session check: user lookup failed", "username", u.Name, "error", err)
				return ctx.Err() == nil
			}
			current[u.Name] = cur
		}
		if cur == nil || !cur.Updated.Equal(u.Updated) || cur.PasswordHash != u.PasswordHash {
			stale = append(stale, cl)
		}
		return ctx.Err() == nil
	})
	ended := map[string]int{}
	for _, cl := range stale {
		ended[string(cl.Properties.Username)]++
		s.endSession(cl)
	}
	for name, n := range ended {
		if f, ok := lookup.(interface{ Forget(string) }); ok {
			f.Forget(name)
		}
		s.log.Info("mqtt sessions ended: the user was removed or changed", "username", name, "sessions", n)
	}
}

// watchSessions runs checkSessions every sessionCheck until Close.
func (s *Server) watchSessions(lookup UserLookup) {
	defer s.wg.Done()
	t := time.NewTicker(sessionCheck)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), sessionCheck)
			s.checkSessions(ctx, lookup)
			cancel()
		}
	}
}
