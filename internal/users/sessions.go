package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/vigilhq/vigil"
)

// Session is a browser's login. Only the hash of its token is stored.
type Session struct {
	IDHash   string
	User     string
	CSRF     string // the token state-changing requests must echo
	Created  time.Time
	Expires  time.Time
	LastSeen time.Time
	Agent    string // the browser's User-Agent, for the user's own list
}

// SessionStore keeps sessions.
type SessionStore interface {
	CreateSession(ctx context.Context, s *Session) error
	GetSession(ctx context.Context, idHash string) (*Session, error)
	TouchSession(ctx context.Context, idHash string, lastSeen, expires time.Time) error
	DeleteSession(ctx context.Context, idHash string) error
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error)
	DeleteUserSessions(ctx context.Context, user, keepHash string) error
}

// Sessions issues and checks browser sessions. A session lasts Idle after
// its last use, and never beyond MaxAge after login.
type Sessions struct {
	Store  SessionStore
	Users  Getter
	Idle   time.Duration
	MaxAge time.Duration
	Now    func() time.Time
}

func (m *Sessions) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Create starts a session for user and returns its token (the cookie's
// value) and the session.
func (m *Sessions) Create(ctx context.Context, user, agent string) (string, *Session, error) {
	token := randomToken()
	now := m.now()
	s := &Session{IDHash: hashToken(token), User: user, CSRF: randomToken(), Created: now, LastSeen: now,
		Expires: minTime(now.Add(m.Idle), now.Add(m.MaxAge)), Agent: agent}
	if err := m.Store.CreateSession(ctx, s); err != nil {
		return "", nil, fmt.Errorf("create session: %w", err)
	}
	return token, s, nil
}

// Lookup returns the live session of token and its user, extending it; a
// missing, expired or orphaned session is a vigil.EUnauthorized error.
func (m *Sessions) Lookup(ctx context.Context, token string) (*Session, *User, error) {
	denied := vigil.Errorf(vigil.EUnauthorized, "not logged in")
	if token == "" {
		return nil, nil, denied
	}
	s, err := m.Store.GetSession(ctx, hashToken(token))
	if vigil.ErrorCode(err) == vigil.ENotFound {
		return nil, nil, denied
	}
	if err != nil {
		return nil, nil, err
	}
	now := m.now()
	if !now.Before(s.Expires) {
		m.Store.DeleteSession(ctx, s.IDHash)
		return nil, nil, denied
	}
	u, err := m.Users.GetUser(ctx, s.User)
	if err != nil {
		return nil, nil, denied // the user was removed
	}
	// Extend, at most once a minute (a write per request would be waste).
	if now.Sub(s.LastSeen) > time.Minute {
		s.LastSeen, s.Expires = now, minTime(now.Add(m.Idle), s.Created.Add(m.MaxAge))
		m.Store.TouchSession(ctx, s.IDHash, s.LastSeen, s.Expires)
	}
	return s, u, nil
}

// Delete ends the session of token.
func (m *Sessions) Delete(ctx context.Context, token string) error {
	return m.Store.DeleteSession(ctx, hashToken(token))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// EndAll ends every session of a user but keep (nil: all of them).
func (m *Sessions) EndAll(ctx context.Context, user string, keep *Session) error {
	k := ""
	if keep != nil {
		k = keep.IDHash
	}
	return m.Store.DeleteUserSessions(ctx, user, k)
}
