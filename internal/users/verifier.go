package users

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/vigilhq/vigil"
)

// Getter is the store a Verifier reads users from.
type Getter interface {
	GetUser(ctx context.Context, name string) (*User, error)
}

// Verifier checks usernames and passwords for the broker and the API. A
// verified credential is remembered for TTL, keyed by an HMAC of the
// password under a per-process key, so that clients which reconnect or call
// the API often do not pay for bcrypt each time. A change of password or ACL
// therefore takes effect within TTL.
type Verifier struct {
	// Limiter, if set, limits the tries Login makes (set before use).
	Limiter *Limiter

	store  Getter
	ttl    time.Duration
	key    [32]byte
	dummy  string // hash compared against for unknown users, to keep timing flat
	flight singleflight.Group

	mu    sync.Mutex
	cache map[string]verified
}

type verified struct {
	mac     [32]byte
	user    *User
	expires time.Time
}

// NewVerifier returns a Verifier over store with the given cache TTL.
func NewVerifier(store Getter, ttl time.Duration, bcryptCost int) *Verifier {
	v := &Verifier{store: store, ttl: ttl, cache: map[string]verified{}}
	rand.Read(v.key[:])
	v.dummy, _ = HashPassword(RandomPassword(), bcryptCost)
	return v
}

// Authenticate returns the user if password is right, else a
// vigil.EUnauthorized error that does not say which part was wrong.
func (v *Verifier) Authenticate(ctx context.Context, name, password string) (*User, error) {
	mac := v.mac(name, password)
	now := time.Now()
	v.mu.Lock()
	c, ok := v.cache[name]
	v.mu.Unlock()
	if ok && now.Before(c.expires) && hmac.Equal(c.mac[:], mac[:]) {
		return c.user, nil
	}
	denied := vigil.Errorf(vigil.EUnauthorized, "wrong username or password")
	u, err := v.store.GetUser(ctx, name)
	if vigil.ErrorCode(err) == vigil.ENotFound {
		CheckPassword(v.dummy, password)
		return nil, denied
	}
	if err != nil {
		return nil, err
	}
	if !CheckPassword(u.PasswordHash, password) {
		return nil, denied
	}
	v.mu.Lock()
	if len(v.cache) > 100000 { // bound memory; entries are cheap to recompute
		clear(v.cache)
	}
	v.cache[name] = verified{mac: mac, user: u, expires: now.Add(v.ttl)}
	v.mu.Unlock()
	return u, nil
}

func (v *Verifier) mac(name, password string) [32]byte {
	h := hmac.New(sha256.New, v.key[:])
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// LookupUser returns the user as it is now in the store (a vigil.ENotFound
// error if it was removed), without checking a password: for the broker's
// check that its sessions' users still hold.
func (v *Verifier) LookupUser(ctx context.Context, name string) (*User, error) {
	return v.store.GetUser(ctx, name)
}

// Forget drops a user's cached password check, after its password or role
// changed or it was removed.
func (v *Verifier) Forget(name string) {
	v.mu.Lock()
	delete(v.cache, name)
	v.mu.Unlock()
}

// Cached returns the user if name and password are what Authenticate
// accepted within the cache's TTL, without bcrypt; otherwise nil.
func (v *Verifier) Cached(name, password string) *User {
	mac := v.mac(name, password)
	v.mu.Lock()
	c, ok := v.cache[name]
	v.mu.Unlock()
	if ok && time.Now().Before(c.expires) && hmac.Equal(c.mac[:], mac[:]) {
		return c.user
	}
	return nil
}
