package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

// CreateSession stores a new session.
func (s *Store) CreateSession(ctx context.Context, x *users.Session) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions (id_hash, "user", csrf, created, expires, last_seen, agent) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		x.IDHash, x.User, x.CSRF, ms(x.Created), ms(x.Expires), ms(x.LastSeen), x.Agent)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// GetSession returns a session by the hash of its token.
func (s *Store) GetSession(ctx context.Context, idHash string) (*users.Session, error) {
	var x users.Session
	var created, expires, seen int64
	err := s.db.QueryRowContext(ctx, `SELECT id_hash, "user", csrf, created, expires, last_seen, agent FROM sessions WHERE id_hash = ?`, idHash).
		Scan(&x.IDHash, &x.User, &x.CSRF, &created, &expires, &seen, &x.Agent)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, vigil.Errorf(vigil.ENotFound, "no session")
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	x.Created, x.Expires, x.LastSeen = fromMS(created), fromMS(expires), fromMS(seen)
	return &x, nil
}

// TouchSession extends a session.
func (s *Store) TouchSession(ctx context.Context, idHash string, lastSeen, expires time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE sessions SET last_seen = ?, expires = ? WHERE id_hash = ?`, ms(lastSeen), ms(expires), idHash)
	return err
}

// DeleteSession removes a session.
func (s *Store) DeleteSession(ctx context.Context, idHash string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE id_hash = ?`, idHash)
	return err
}

// DeleteExpiredSessions removes sessions expired before now.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires <= ?`, ms(now))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// DeleteUserSessions ends every session of a user (after a password
// change), but keepHash's.
func (s *Store) DeleteUserSessions(ctx context.Context, user, keepHash string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE "user" = ? AND id_hash != ?`, user, keepHash)
	return err
}
