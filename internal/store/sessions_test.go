package store

import (
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

// A session lasts Idle after its last use and never beyond MaxAge; its
// token is not what is stored; removing the user ends it.
func TestSessionsExpireAndAreStoredHashed(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.CreateUser(ctx, &users.User{Name: "ann", Role: users.RoleViewer, PasswordHash: "x"}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &users.Sessions{Store: s, Users: s, Idle: time.Hour, MaxAge: 3 * time.Hour, Now: func() time.Time { return now }}
	token, sess, err := m.Create(ctx, "ann", "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, token); vigil.ErrorCode(err) != vigil.ENotFound {
		t.Errorf("the raw token finds a stored session: %v", err)
	}
	// Used every 50 minutes, it lives until MaxAge.
	for range 3 {
		now = now.Add(50 * time.Minute)
		if _, u, err := m.Lookup(ctx, token); err != nil || u.Name != "ann" {
			t.Fatalf("at %v: %v", now, err)
		}
	}
	now = sess.Created.Add(3 * time.Hour)
	if _, _, err := m.Lookup(ctx, token); vigil.ErrorCode(err) != vigil.EUnauthorized {
		t.Errorf("after MaxAge: %v, want unauthorized", err)
	}
	// Idle for longer than Idle: gone.
	now = now.Add(time.Hour)
	token2, _, _ := m.Create(ctx, "ann", "test")
	now = now.Add(61 * time.Minute)
	if _, _, err := m.Lookup(ctx, token2); vigil.ErrorCode(err) != vigil.EUnauthorized {
		t.Errorf("after an idle hour: %v, want unauthorized", err)
	}
	token3, _, _ := m.Create(ctx, "ann", "test")
	if err := s.DeleteUser(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Lookup(ctx, token3); vigil.ErrorCode(err) != vigil.EUnauthorized {
		t.Errorf("after the user was removed: %v, want unauthorized", err)
	}
}
