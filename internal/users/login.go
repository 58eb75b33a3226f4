package users

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilhq/vigil"
)

// TooManyError refuses a login that was not tried: its client address or
// its username has had its tries (Limiter). Wait is how long until the next
// try may be made.
type TooManyError struct {
	Wait time.Duration
}

func (e *TooManyError) Error() string {
	return fmt.Sprintf("too many login attempts; try again in %s", e.Wait.Round(time.Second))
}

// Login checks name and password for a client at addr (an IP address), the
// one way every login is checked, whatever it comes through (the API, the
// web UI, MQTT): while the client's address or the username has had its
// tries, nothing passes; otherwise a password verified within the cache's
// TTL passes at once; any other try is counted against addr and against name in v.Limiter
// before bcrypt runs, so that guesses made in parallel or spread over
// protocols share one budget; a right password takes its try back. The
// same name and password tried by many clients at once (a fleet sharing an
// account, reconnecting) cost one try and one bcrypt.
//
// It returns a *TooManyError when the limit is reached, and a
// vigil.EUnauthorized error for a wrong username or password.
func (v *Verifier) Login(ctx context.Context, addr, name, password string) (*User, error) {
	// While the address or the username is locked, every answer is the
	// same, even for a password verified a moment ago: otherwise a locked
	// guesser could go on testing passwords for free against the cache.
	if l := v.Limiter; l != nil {
		if wait := max(l.Locked("ip:"+addr, l.Max), l.Locked("user:"+name, l.Max*UserFactor)); wait > 0 {
			return nil, &TooManyError{Wait: wait}
		}
	}
	if u := v.Cached(name, password); u != nil {
		return u, nil
	}
	mac := v.mac(name, password)
	r, err, _ := v.flight.Do(string(mac[:]), func() (any, error) {
		return v.limitedAuthenticate(ctx, addr, name, password)
	})
	if err != nil {
		return nil, err
	}
	return r.(*User), nil
}

// CountFailure counts a try against addr and name, as a wrong password
// would be: for a right password refused for another reason that must look
// the same (a device account at the web login).
func (v *Verifier) CountFailure(addr, name string) {
	if l := v.Limiter; l != nil {
		l.Attempt("ip:"+addr, l.Max)
		l.Attempt("user:"+name, l.Max*UserFactor)
	}
}

func (v *Verifier) limitedAuthenticate(ctx context.Context, addr, name, password string) (*User, error) {
	l := v.Limiter
	if l == nil {
		return v.Authenticate(ctx, name, password)
	}
	ipKey, userKey := "ip:"+addr, "user:"+name
	if wait := l.Attempt(ipKey, l.Max); wait > 0 {
		return nil, &TooManyError{Wait: wait}
	}
	if wait := l.Attempt(userKey, l.Max*UserFactor); wait > 0 {
		l.Release(ipKey)
		return nil, &TooManyError{Wait: wait}
	}
	u, err := v.Authenticate(ctx, name, password)
	switch {
	case err == nil:
		l.Release(ipKey)
		l.Succeed(userKey)
	case vigil.ErrorCode(err) != vigil.EUnauthorized: // not a wrong password: not a guess
		l.Release(ipKey)
		l.Release(userKey)
	}
	return u, err
}
