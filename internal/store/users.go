package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

// CreateUser adds a user; the name must be free.
func (s *Store) CreateUser(ctx context.Context, u *users.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	now := time.Now()
	pub, _ := json.Marshal(nonNil(u.Publish))
	sub, _ := json.Marshal(nonNil(u.Subscribe))
	_, err := s.db.ExecContext(ctx, `INSERT INTO users (name, role, hash, publish, subscribe, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, u.Name, u.Role, u.PasswordHash, pub, sub, ms(now), ms(now))
	if err != nil {
		if isUnique(err) {
			return vigil.Errorf(vigil.EConflict, "user %q already exists", u.Name)
		}
		return fmt.Errorf("create user: %w", err)
	}
	u.Created, u.Updated = now, now
	return nil
}

// UpdateUser replaces a user's role, password hash and ACL.
func (s *Store) UpdateUser(ctx context.Context, u *users.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	pub, _ := json.Marshal(nonNil(u.Publish))
	sub, _ := json.Marshal(nonNil(u.Subscribe))
	res, err := s.db.ExecContext(ctx, `UPDATE users SET role = ?, hash = ?, publish = ?, subscribe = ?, updated = ? WHERE name = ?`,
		u.Role, u.PasswordHash, pub, sub, ms(time.Now()), u.Name)
	if err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return vigil.Errorf(vigil.ENotFound, "no user %q", u.Name)
	}
	return nil
}

// DeleteUser removes a user.
// Its browsers' push subscriptions go with it: a removed user is notified
// of nothing more.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return vigil.Errorf(vigil.ENotFound, "no user %q", name)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM push_subscriptions WHERE user_name = ?`, name); err != nil {
		return fmt.Errorf("delete user's push subscriptions: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	return nil
}

const userColumns = `name, role, hash, publish, subscribe, created, updated`

func scanUser(row scanner) (*users.User, error) {
	var u users.User
	var pub, sub string
	var created, updated int64
	if err := row.Scan(&u.Name, &u.Role, &u.PasswordHash, &pub, &sub, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(pub), &u.Publish); err != nil {
		return nil, fmt.Errorf("user %s: publish ACL: %w", u.Name, err)
	}
	if err := json.Unmarshal([]byte(sub), &u.Subscribe); err != nil {
		return nil, fmt.Errorf("user %s: subscribe ACL: %w", u.Name, err)
	}
	u.Created, u.Updated = fromMS(created), fromMS(updated)
	return &u, nil
}

// GetUser returns a user, or a vigil.ENotFound error.
func (s *Store) GetUser(ctx context.Context, name string) (*users.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, vigil.Errorf(vigil.ENotFound, "no user %q", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// ListUsers returns all users by name.
func (s *Store) ListUsers(ctx context.Context) ([]*users.User, error) {
	return queryAll(ctx, s.db, "list users", scanUser, `SELECT `+userColumns+` FROM users ORDER BY name`)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
