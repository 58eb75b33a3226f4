package broker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"log/slog"
	"sync"
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
}

// credential is an in-memory login (see Server.AddCredential).
type credential struct {
	password string
	user     *users.User
}

func newAuthHook(authn Authenticator, log *slog.Logger) *authHook {
	return &authHook{
		authn:            authn,
		log:              log.With("component", "mqtt-auth"),
		internalPassword: users.RandomPassword(),
		anonymous:        map[string]bool{},
	}
}

func (h *authHook) ID() string { return "vigil-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect}, []byte{b})
}

func (h *authHook) setListener(id string, anonymous bool) {
	h.mu.Lock()
	h.anonymous[id] = anonymous
	h.mu.Unlock()
}

// OnConnectAuthenticate accepts anonymous clients only on listeners that
// allow them, and everyone else by username and password.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	password := string(pk.Connect.Password)
	if !pk.Connect.UsernameFlag || name == "" {
		h.mu.RLock()
		ok := h.anonymous[cl.Net.Listener]
		h.mu.RUnlock()
		if !ok {
			h.log.Info("anonymous client refused: this listener requires a username and password",
				"listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID)
		}
		return ok
	}
	if name == internalUser {
		return subtle.ConstantTimeCompare([]byte(password), []byte(h.internalPassword)) == 1
	}
	if v, ok := h.creds.Load(name); ok {
		c := v.(credential)
		if subtle.ConstantTimeCompare([]byte(password), []byte(c.password)) != 1 {
			h.log.Info("client refused: wrong password", "listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID, "username", name)
			return false
		}
		h.clients.Store(cl, c.user)
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := h.authn.Authenticate(ctx, name, password)
	if err != nil {
		h.log.Info("client refused: wrong username or password",
			"listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID, "username", name)
		return false
	}
	h.clients.Store(cl, u)
	return true
}

// OnACLCheck applies the user's ACL; anonymous loopback clients and Vigil's
// own clients may use every topic.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
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
}
