package broker

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/users"
)

// Authenticator checks a username and password.
type Authenticator interface {
	Authenticate(ctx context.Context, username, password string) (*users.User, error)
}

// internalUser is the username of Vigil's own clients. It cannot collide
// with a real user: ':' is not allowed in user names.
const internalUser = "vigil:internal"

// authHook decides who may connect and what each client may publish and
// subscribe to.
type authHook struct {
	mqtt.HookBase
	authn            Authenticator
	log              *slog.Logger
	internalPassword string

	mu        sync.RWMutex
	anonymous map[string]bool // listener id -> anonymous clients allowed

	clients sync.Map // *mqtt.Client -> *users.User; absent: full access (anonymous on loopback, internal)
	creds   sync.Map // username -> credential, for agents
	own     sync.Map // *mqtt.Client -> struct{}: Vigil's own logins (internal, agents), never blocked

	// failed is told of every refused login (set before the broker serves).
	failed func(cl *mqtt.Client, username string)

	lastSweep atomic.Int64 // unix seconds of the last sweep of clients and own
}

// credential is an in-memory login (see Server.AddCredential).
type credential struct {
	password string
	user     *users.User
}

func newAuthHook(authn Authenticator, log *slog.Logger) *authHook {
	return &authHook{
		authn:            authn,
		log:              log.With("part", "auth"),
		internalPassword: users.RandomPassword(),
		anonymous:        map[string]bool{},
	}
}

func (h *authHook) ID() string { return "vigil-auth" }

// Provides is asked for every hook on every event (every packet): a switch,
// not a slice search.
func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect:
		return true
	}
	return false
}

func (h *authHook) setListener(id string, anonymous bool) {
	h.mu.Lock()
	h.anonymous[id] = anonymous
	h.mu.Unlock()
}

// OnConnectAuthenticate accepts anonymous clients only on listeners that
// allow them, and everyone else by username and password.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.sweep()
	name := string(pk.Connect.Username)
	password := string(pk.Connect.Password)
	if !pk.Connect.UsernameFlag || name == "" {
		h.mu.RLock()
		ok := h.anonymous[cl.Net.Listener]
		h.mu.RUnlock()
		if !ok {
			h.log.Info("anonymous client refused: this listener requires a username and password",
				"listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID)
			h.fail(cl, "")
		}
		return ok
	}
	if name == internalUser {
		if subtle.ConstantTimeCompare([]byte(password), []byte(h.internalPassword)) != 1 {
			h.log.Info("client refused: wrong password", "listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID, "username", name)
			h.fail(cl, name)
			return false
		}
		h.own.Store(cl, struct{}{})
		return true
	}
	if v, ok := h.creds.Load(name); ok {
		c := v.(credential)
		if subtle.ConstantTimeCompare([]byte(password), []byte(c.password)) != 1 {
			h.log.Info("client refused: wrong password", "listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID, "username", name)
			h.fail(cl, name)
			return false
		}
		h.clients.Store(cl, c.user)
		h.own.Store(cl, struct{}{})
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := h.authn.Authenticate(ctx, name, password)
	if err != nil {
		h.log.Info("client refused: wrong username or password",
			"listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID, "username", name)
		h.fail(cl, name)
		return false
	}
	h.clients.Store(cl, u)
	return true
}

// OnACLCheck applies the user's ACL; anonymous loopback clients and Vigil's
// own clients may use every topic.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	// mochi only checks where '#' stands; a filter such as "a/x+/b" or
	// "a/x#", which MQTT forbids, is refused here (SUBACK "not
	// authorised"), whoever asks.
	if !write && !users.ValidFilter(topic) {
		h.log.Debug("malformed topic filter refused", "client_id", cl.ID, "filter", topic)
		return false
	}
	v, ok := h.clients.Load(cl)
	if !ok {
		return true
	}
	u := v.(*users.User)
	var allowed bool
	if write {
		allowed = u.CanPublish(topic, cl.ID)
	} else {
		allowed = u.CanSubscribe(topic, cl.ID)
	}
	if !allowed {
		h.log.Debug("acl denied", "username", u.Name, "client_id", cl.ID, "topic", topic, "publish", write)
	}
	return allowed
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.clients.Delete(cl)
	h.own.Delete(cl)
}

// sweep forgets clients that ended without OnDisconnect, at most once a
// minute: mochi skips it when the CONNACK or the resend of a session's
// messages fails after the login succeeded.
func (h *authHook) sweep() {
	now := time.Now().Unix()
	last := h.lastSweep.Load()
	if now-last < 60 || !h.lastSweep.CompareAndSwap(last, now) {
		return
	}
	for _, m := range []*sync.Map{&h.clients, &h.own} {
		m.Range(func(k, _ any) bool {
			if k.(*mqtt.Client).Closed() {
				m.Delete(k)
			}
			return true
		})
	}
}

func (h *authHook) fail(cl *mqtt.Client, username string) {
	if h.failed != nil {
		h.failed(cl, username)
	}
}

// isOwn reports whether a connected client logged in as Vigil itself (the
// internal user, or an agent's credential).
func (h *authHook) isOwn(cl *mqtt.Client) bool {
	_, ok := h.own.Load(cl)
	return ok
}

// ownLogin reports whether a CONNECT carries Vigil's own credentials (the
// internal user's, or an agent's), without logging or counting anything.
func (h *authHook) ownLogin(pk packets.Packet) bool {
	if !pk.Connect.UsernameFlag || !pk.Connect.PasswordFlag {
		return false
	}
	name := string(pk.Connect.Username)
	want := h.internalPassword
	if name != internalUser {
		v, ok := h.creds.Load(name)
		if !ok {
			return false
		}
		want = v.(credential).password
	}
	return subtle.ConstantTimeCompare(pk.Connect.Password, []byte(want)) == 1
}
