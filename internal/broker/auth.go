package broker

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigilhq/vigil/internal/ratelog"
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
	mochi            *mqtt.Server
	noRetainFilters  []string
	rlog             *ratelog.Logger

	mu        sync.RWMutex
	anonymous map[string]bool // listener id -> anonymous clients allowed

	// anonymousUser is the ACL anonymous clients get (mqtt.anonymous_*).
	anonymousUser *users.User

	clients  sync.Map // *mqtt.Client -> *users.User (anonymous clients: anonymousUser); absent: full access (Vigil's internal client)
	creds    sync.Map // username -> credential, for agents
	reserved sync.Map // client id -> the credential's name that alone may use it
	own      sync.Map // *mqtt.Client -> struct{}: Vigil's own logins (internal, agents), never blocked
	revoked  sync.Map // *mqtt.Client -> struct{}: its user was removed or changed; its session ends with it
	claims   sync.Map // client id -> claim: the login that last held it

	// claimGrace is how long a client id stays its last login's after it
	// disconnected (mqtt.client_id_grace); now is the clock (tests).
	claimGrace time.Duration
	now        atomic.Pointer[func() time.Time]

	// expire removes a client's session (set by Open).
	expire func(cl *mqtt.Client)

	// failed is told of every refused login (set before the broker serves).
	failed func(cl *mqtt.Client, username string)
	// exempt reports an address that is never blocked (mqtt.block_exempt).
	exempt func(ip netip.Addr) bool

	// selfAudit recognises vigil up's self-audit probes.
	selfAudit *selfAudit

	lastSweep atomic.Int64 // unix seconds of the last sweep of clients and own
}

// credential is an in-memory login (see Server.AddCredential).
type credential struct {
	password  string
	user      *users.User
	clientIDs []string // if any, the only client ids it may use
}

func newAuthHook(authn Authenticator, log *slog.Logger, sa *selfAudit) *authHook {
	return &authHook{
		authn:            authn,
		log:              log.With("part", "auth"),
		internalPassword: users.RandomPassword(),
		anonymous:        map[string]bool{},
		selfAudit:        sa,
	}
}

func (h *authHook) ID() string { return "vigil-auth" }

// Provides is asked for every hook on every event (every packet): a switch,
// not a slice search.
func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect:
		return true
	case mqtt.OnPublish:
		return len(h.noRetainFilters) > 0
	case mqtt.OnWill:
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
// allow them, and everyone else by username and password; then the
// client's last will, which the broker publishes on its behalf, must be
// one it could publish itself.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.sweep()
	u, own, code := h.login(cl, pk)
	if code != nil {
		if *code != packets.ErrBadUsernameOrPassword {
			h.refuse(cl, *code)
		}
		return false // mochi answers "bad user name or password"
	}
	if code, why := h.clientIDRefused(cl, pk); code != nil {
		h.refused(cl, why, false, "username", string(pk.Connect.Username))
		h.refuse(cl, *code)
		return false
	}
	if pk.Connect.WillFlag && !own {
		if code, why := h.willRefused(cl, pk, u); code != nil {
			h.refused(cl, why, false, "username", string(pk.Connect.Username),
				"will_topic", pk.Connect.WillTopic, "will_retain", pk.Connect.WillRetain)
			h.refuse(cl, *code)
			return false
		}
	}
	if u != nil {
		h.clients.Store(cl, u)
	}
	if own {
		h.own.Store(cl, struct{}{})
	}
	h.claimID(cl)
	return true
}

// login checks a CONNECT's credentials. It returns the user whose ACL
// applies (anonymousUser for anonymous clients where they are allowed;
// nil, every topic, for Vigil's own internal client) and whether the
// login is Vigil's own; or the code to refuse it with.
func (h *authHook) login(cl *mqtt.Client, pk packets.Packet) (u *users.User, own bool, refuse *packets.Code) {
	name := string(pk.Connect.Username)
	password := string(pk.Connect.Password)
	bad := &packets.ErrBadUsernameOrPassword
	if !pk.Connect.UsernameFlag || name == "" {
		h.mu.RLock()
		ok := h.anonymous[cl.Net.Listener]
		h.mu.RUnlock()
		if !ok {
			h.refused(cl, "anonymous, and this listener requires a username and password", true)
			return nil, false, bad
		}
		return h.anonymousUser, false, nil
	}
	if name == internalUser {
		if subtle.ConstantTimeCompare([]byte(password), []byte(h.internalPassword)) != 1 {
			h.refused(cl, "wrong password", true, "username", name)
			return nil, false, bad
		}
		return nil, true, nil
	}
	if v, ok := h.creds.Load(name); ok {
		c := v.(credential)
		if subtle.ConstantTimeCompare([]byte(password), []byte(c.password)) != 1 {
			h.refused(cl, "wrong password", true, "username", name)
			return nil, false, bad
		}
		return c.user, true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if l, ok := h.authn.(loginLimiter); ok && !h.isSelfAudit(cl) {
		// Under the login limiter the API and the web UI share: guesses
		// over MQTT and HTTP draw on one budget per address and username.
		ip, _ := remoteIP(cl)
		u, err = l.Login(ctx, ip.String(), name, password)
	} else {
		u, err = h.authn.Authenticate(ctx, name, password)
	}
	var tm *users.TooManyError
	switch {
	case errors.As(err, &tm):
		h.refused(cl, "too many login attempts from this address or for this user; try again in "+tm.Wait.Round(time.Second).String(), true, "username", name)
		return nil, false, &packets.ErrConnectionRateExceeded
	case err != nil:
		h.refused(cl, "wrong username or password", true, "username", name)
		return nil, false, bad
	}
	return u, false, nil
}

// loginLimiter is an Authenticator with the shared login limiter
// (users.Verifier).
type loginLimiter interface {
	Login(ctx context.Context, addr, name, password string) (*users.User, error)
}

// refused logs a refused CONNECT and, for a failed login, tells the guard
// (blocks). The self-audit's own refusals are expected: logged at debug,
// counted for its summary, never held against its address.
func (h *authHook) refused(cl *mqtt.Client, why string, failedLogin bool, args ...any) {
	args = append([]any{"listener", cl.Net.Listener, "remote", cl.Net.Remote, "client_id", cl.ID}, args...)
	if h.isSelfAudit(cl) {
		h.selfAudit.refused.Add(1)
		h.log.Debug("self-audit probe refused: "+why, args...)
		return
	}
	if failedLogin {
		h.log.Info("client refused: "+why, args...)
		h.fail(cl, string(cl.Properties.Username))
		return
	}
	// A refused client id or will comes after a right password (often a
	// cached one, so cheap to repeat) and is not held against the address:
	// one line a minute for each reason.
	h.rlog.Info(why, "client refused: "+why, args...)
}

// isSelfAudit reports whether a client is one of vigil up's self-audit
// probes: its client id carries the secret prefix only this process knows
// (Server.SelfAuditClientID), and it connects from an address that is
// never blocked (where the self-audit guesses passwords).
func (h *authHook) isSelfAudit(cl *mqtt.Client) bool {
	if !h.selfAudit.is(cl.ID) {
		return false
	}
	ip, ok := remoteIP(cl)
	return ok && h.exempt(ip)
}

// clientIDRefused says why a client, whose login succeeded, may not use
// the client id it asks for, or returns nil. A client id belongs to the
// login whose session holds it: another login (another user, anonymous
// against a user, a user against anonymous) may not take the session
// over, which would disconnect its owner and inherit its subscriptions.
// Ids reserved for an in-memory credential (an agent's) are that
// credential's alone, even while it is offline, and such a credential
// uses no other.
func (h *authHook) clientIDRefused(cl *mqtt.Client, pk packets.Packet) (*packets.Code, string) {
	login := ""
	if pk.Connect.UsernameFlag {
		login = string(pk.Connect.Username)
	}
	if owner, ok := h.reserved.Load(cl.ID); ok && owner.(string) != login {
		return &packets.ErrClientIdentifierNotValid, "its client id is reserved for one of Vigil's own logins"
	}
	if v, ok := h.creds.Load(login); ok && len(v.(credential).clientIDs) > 0 && !slices.Contains(v.(credential).clientIDs, cl.ID) {
		return &packets.ErrClientIdentifierNotValid, "this login may only use its own client id"
	}
	if old, ok := h.mochi.Clients.Get(cl.ID); ok && string(old.Properties.Username) != login {
		return &packets.ErrClientIdentifierNotValid, "its client id belongs to another login's session"
	}
	if v, ok := h.claims.Load(cl.ID); ok {
		if c := v.(claim); c.login != login && h.clock().Sub(c.seen) < h.claimGrace {
			return &packets.ErrClientIdentifierNotValid, "its client id was another login's within mqtt.client_id_grace"
		}
	}
	return nil, ""
}

// claim is the login that last held a client id, and when.
type claim struct {
	login string
	seen  time.Time
}

// claimID records that login holds cl's client id now (at CONNECT and at
// DISCONNECT): another login may not take it until mqtt.client_id_grace
// after its holder was last connected, so that a device that drops or
// reboots finds its id free.
func (h *authHook) claimID(cl *mqtt.Client) {
	if h.claimGrace > 0 && !cl.Net.Inline {
		h.claims.Store(cl.ID, claim{login: string(cl.Properties.Username), seen: h.clock()})
	}
}

func (h *authHook) clock() time.Time {
	if f := h.now.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// willRefused says why a CONNECT's last will is refused, or returns nil:
// its topic must be a topic name the user may publish to, and nobody but
// Vigil may leave a retained message where Vigil takes commands.
func (h *authHook) willRefused(cl *mqtt.Client, pk packets.Packet, u *users.User) (*packets.Code, string) {
	topic := pk.Connect.WillTopic
	switch {
	case !validTopicName(topic):
		return &packets.ErrTopicNameInvalid, "its last will's topic is not a valid topic name"
	case u != nil && !u.CanPublish(topic, cl.ID):
		return &packets.ErrNotAuthorized, "its last will is on a topic it may not publish to"
	case pk.Connect.WillRetain && h.noRetain(topic):
		return &packets.ErrNotAuthorized, "its last will would be retained on a command topic"
	}
	return nil, ""
}

// noRetain reports whether topic is one where no client may leave a
// retained message (mqtt's command topics, Config.NoRetain).
func (h *authHook) noRetain(topic string) bool {
	for _, f := range h.noRetainFilters {
		if users.MatchTopic(f, topic) {
			return true
		}
	}
	return false
}

// refuse answers a CONNECT with code (its MQTT 3.1.1 equivalent for older
// clients, else "not authorised") and ends the connection, so that
// mochi's own answer to a failed authentication is never sent.
func (h *authHook) refuse(cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion < 5 {
		if v3, ok := packets.V5CodesToV3[code]; ok {
			code = v3
		} else {
			code = packets.Err3NotAuthorized
		}
	}
	_ = h.mochi.SendConnack(cl, code, false, nil)
	cl.Stop(errRefused)
}

// errRefused ends a connection whose CONNECT was refused by the auth hook.
var errRefused = errors.New("connect refused")

// validTopicName reports whether t may be published to: not empty, no
// wildcard, no NUL.
func validTopicName(t string) bool {
	return t != "" && !strings.ContainsAny(t, "+#\x00")
}

// OnPublish refuses a retained message on a command topic from anyone but
// Vigil itself: a retained "disarm" would disarm its site again at every
// start of Vigil. MQTT 5 publishers at QoS 1 and 2 are told "not
// authorised" in their acknowledgement; MQTT 3.1.1 ones, which have no
// such answer, are disconnected, as for any publish their ACL refuses; at
// QoS 0 the message is dropped.
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || cl.Net.Inline || !h.noRetain(pk.TopicName) || h.isOwn(cl) {
		return pk, nil
	}
	answer := "dropped"
	if pk.FixedHeader.Qos > 0 {
		answer = refusePublish(cl, pk, packets.ErrNotAuthorized)
	}
	h.rlog.Warn("retained-command", "retained message on a command topic refused", "client_id", cl.ID,
		"username", string(cl.Properties.Username), "remote", cl.Net.Remote, "topic", pk.TopicName, "answer", answer)
	return pk, packets.ErrRejectPacket
}

// refusePublish answers a PUBLISH at QoS 1 or 2 that a hook refuses: MQTT
// 5 gets a PUBACK, or at QoS 2 a PUBREC, with code (written here: mochi
// answers a hook's error with a PUBACK even at QoS 2, and logs the whole
// packet); MQTT 3.1.1, which has no such answer, is disconnected. The hook
// then returns packets.ErrRejectPacket. It returns what the client got, for
// logs.
func refusePublish(cl *mqtt.Client, pk packets.Packet, code packets.Code) string {
	if cl.Properties.ProtocolVersion < 5 {
		cl.Stop(code) // MQTT 3.1.1 has no DISCONNECT from the server
		return "disconnected"
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID,
		ReasonCode: code.Code, Properties: packets.Properties{ReasonString: code.Reason}}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	_ = cl.WritePacket(ack)
	return fmt.Sprintf("refused (%#02x)", code.Code)
}

// revokedWill is where the will of a client whose user was removed or
// changed goes: a '$' topic, which no wildcard matches and no ACL reaches.
const revokedWill = "$vigil/revoked-will"

// OnWill sends nowhere the will of a client whose session was ended because
// its user was removed or changed (EndSessions): a revoked login says
// nothing more. mochi asks on the client's own goroutine, as its
// connection ends, before the hook's OnDisconnect.
func (h *authHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if _, ok := h.revoked.Load(cl); ok {
		return mqtt.Will{TopicName: revokedWill}, nil
	}
	return will, nil
}

// OnACLCheck applies the user's ACL (anonymous clients: mqtt.anonymous_*);
// Vigil's internal client may use every topic.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !write {
		topic = unshared(topic)
	}
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

// unshared returns the filter of a shared subscription
// ("$share/<group>/<filter>", MQTT 5 section 4.8.2), which is what it
// receives, for the ACL to judge as Mosquitto's does; other filters as they
// are. A "$share/..." with no group or no filter stays as it is, and no ACL
// pattern with a wildcard first matches it (section 4.7.2).
func unshared(filter string) string {
	rest, ok := strings.CutPrefix(filter, "$share/")
	if !ok {
		return filter
	}
	group, f, ok := strings.Cut(rest, "/")
	if !ok || group == "" || f == "" {
		return filter
	}
	return f
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if _, ok := h.clients.Load(cl); ok || h.isOwn(cl) {
		h.claimID(cl) // a client that was let in
	}
	h.clients.Delete(cl)
	h.own.Delete(cl)
	if _, ok := h.revoked.LoadAndDelete(cl); ok && h.expire != nil {
		h.expire(cl)
	}
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
	for _, m := range []*sync.Map{&h.clients, &h.own, &h.revoked} {
		m.Range(func(k, _ any) bool {
			if k.(*mqtt.Client).Closed() {
				m.Delete(k)
			}
			return true
		})
	}
	expired := h.clock().Add(-h.claimGrace)
	h.claims.Range(func(k, v any) bool {
		if v.(claim).seen.Before(expired) {
			h.claims.CompareAndDelete(k, v)
		}
		return true
	})
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
