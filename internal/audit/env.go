package audit

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Identity is who the checks connect as.
type Identity struct {
	Username, Password string
	Source             string // given, weak-credentials or anonymous
}

// Anonymous tells whether the identity has no username.
func (id *Identity) Anonymous() bool { return id.Username == "" }

func (id *Identity) String() string {
	if id.Anonymous() {
		return "an anonymous client"
	}
	return fmt.Sprintf("user %q (%s)", id.Username, id.Source)
}

// Env is what the checks of one target share.
type Env struct {
	Target *Target
	Opts   *Options
	// All holds every target's Env (for multi-target checks).
	All []*Env

	report *Report
	tls    *tls.Config // for connections (CA, insecure)
	seq    atomic.Int64

	mu sync.Mutex
	// scannedPorts: open-ports' scan ran (mqtt is then all there is).
	scannedPorts bool
	// MQTT are the open endpoints that answered a CONNECT.
	mqtt []Endpoint
	// Identity is who later checks connect as: the given credentials, a
	// weak password weak-credentials found, or anonymous if that is
	// allowed; nil if nobody can connect.
	identity *Identity
	// AnonymousOK: an anonymous CONNECT was accepted.
	anonymousOK bool
	// Sys holds $SYS values seen; Topics the topics seen; Retained the
	// retained messages seen.
	sys      map[string]string
	topics   map[string]bool
	retained map[string][]byte
	// sysRead: $SYS/# was granted to sysBy (set by broker-fingerprint).
	sysRead bool
	sysBy   *Identity
}

func newEnv(t *Target, o *Options) (*Env, error) {
	cfg, err := mqttconn.TLSConfig(mqttconn.TLS{CA: o.CAFile, Insecure: o.Insecure})
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	env := &Env{Target: t, Opts: o, tls: cfg,
		report: &Report{Target: t.Input, Findings: []Finding{}, Checks: []CheckResult{}, Started: o.Now(), Nmap: "skipped"},
		sys:    map[string]string{}, topics: map[string]bool{}, retained: map[string][]byte{}}
	if o.Username != "" {
		env.identity = &Identity{Username: o.Username, Password: o.Password, Source: "given"}
	}
	if !t.Given && o.NoDefaultPorts {
		t.Endpoints = nil
	}
	return env, nil
}

// ClientID returns a fresh client id for a probe.
func (env *Env) ClientID(what string) string {
	return fmt.Sprintf("%s-%s-%d-%d", env.Opts.ClientID, what, os.Getpid()%10000, env.seq.Add(1))
}

// TLSConfig returns the TLS configuration connections use, for a host
// (Options.CertName, if set, is the name asked for).
func (env *Env) TLSConfig(host string) *tls.Config {
	c := env.tls.Clone()
	c.ServerName = host
	if env.Opts.CertName != "" {
		c.ServerName = env.Opts.CertName
	}
	return c
}

// CertName is the name the broker's certificate must hold.
func (env *Env) CertName() string {
	if env.Opts.CertName != "" {
		return env.Opts.CertName
	}
	return env.Target.Host
}

// setScanned records that open-ports' scan ran: the endpoints that speak
// MQTT are known.
func (env *Env) setScanned() {
	env.mu.Lock()
	env.scannedPorts = true
	env.mu.Unlock()
}

// MQTT returns the endpoints that answered an MQTT CONNECT, TLS ones
// first (see AddMQTT). Once open-ports has run these are the only ones
// (none, when no port speaks MQTT); before (it was skipped), the
// target's endpoints, untested.
func (env *Env) MQTT() []Endpoint {
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.scannedPorts || len(env.mqtt) > 0 {
		return append([]Endpoint(nil), env.mqtt...)
	}
	return env.Target.Endpoints
}

// AddMQTT records an endpoint that speaks MQTT.
func (env *Env) AddMQTT(ep Endpoint) {
	env.mu.Lock()
	defer env.mu.Unlock()
	for _, e := range env.mqtt {
		if e == ep {
			return
		}
	}
	env.mqtt = append(env.mqtt, ep)
	// Identities' credentials go over TLS when the broker offers it:
	// MQTT over TLS, plain MQTT, then secure and plain WebSocket.
	rank := func(e Endpoint) int {
		r := 0
		if e.WS() {
			r += 2
		}
		if !e.TLS() {
			r++
		}
		return r
	}
	sort.SliceStable(env.mqtt, func(i, j int) bool { return rank(env.mqtt[i]) < rank(env.mqtt[j]) })
}

// Primary is the endpoint the identity checks use: the first that speaks
// MQTT (TLS before plain, TCP before WebSocket).
func (env *Env) Primary() (Endpoint, bool) {
	eps := env.MQTT()
	if len(eps) == 0 {
		return Endpoint{}, false
	}
	return eps[0], true
}

// localMode tells whether the target is Vigil in local mode on loopback
// (Options.LocalMode), where anonymous access is expected: what an
// anonymous client can do there is reported as info.
func (env *Env) localMode() bool { return env.Opts.LocalMode && env.Target.Loopback() }

// severityFor is the severity of what id could do: named for a user, anon
// for an anonymous client, info for an anonymous client in local mode.
func (env *Env) severityFor(id *Identity, anon, named Severity) Severity {
	switch {
	case !id.Anonymous():
		return named
	case env.localMode():
		return Info
	}
	return anon
}

// Identity returns who later checks connect as (nil: nobody can).
func (env *Env) Identity() *Identity {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.identity
}

// SetIdentity sets who later checks connect as, unless one was given.
func (env *Env) SetIdentity(id *Identity) {
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.identity == nil || env.identity.Source != "given" {
		env.identity = id
	}
}

// AnonymousOK tells whether an anonymous client could connect.
func (env *Env) AnonymousOK() bool {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.anonymousOK
}

// SetAnonymousOK records whether an anonymous client could connect.
func (env *Env) SetAnonymousOK(ok bool) {
	env.mu.Lock()
	env.anonymousOK = ok
	env.mu.Unlock()
}

// Sys returns the $SYS values seen.
func (env *Env) Sys() map[string]string {
	env.mu.Lock()
	defer env.mu.Unlock()
	out := make(map[string]string, len(env.sys))
	for k, v := range env.sys {
		out[k] = v
	}
	return out
}

// Seen records a message seen on the broker.
func (env *Env) Seen(topic string, payload []byte, retained bool) {
	env.mu.Lock()
	defer env.mu.Unlock()
	if len(topic) > 4 && topic[:5] == "$SYS/" {
		if len(env.sys) < 1000 {
			env.sys[topic] = string(payload)
		}
		return
	}
	if len(env.topics) < 10000 {
		env.topics[topic] = true
	}
	if retained && len(env.retained) < 10000 {
		env.retained[topic] = append([]byte(nil), payload...)
	}
}

// Topics returns the (non-$SYS) topics seen, sorted.
func (env *Env) Topics() []string {
	env.mu.Lock()
	defer env.mu.Unlock()
	out := make([]string, 0, len(env.topics))
	for t := range env.topics {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Retained returns the retained messages seen.
func (env *Env) Retained() map[string][]byte {
	env.mu.Lock()
	defer env.mu.Unlock()
	out := make(map[string][]byte, len(env.retained))
	for k, v := range env.retained {
		out[k] = v
	}
	return out
}

// SetBroker records the broker's product and version.
func (env *Env) SetBroker(s string) {
	env.mu.Lock()
	env.report.Broker = s
	env.mu.Unlock()
}

// SetNmap records how nmap was used.
func (env *Env) SetNmap(s string) {
	env.mu.Lock()
	env.report.Nmap = s
	env.mu.Unlock()
}

// AddEvidence appends to the evidence of an earlier finding of check id,
// if there is one (nmap merges its view this way); it reports whether it
// did.
func (env *Env) AddEvidence(id, evidence string) bool {
	env.mu.Lock()
	defer env.mu.Unlock()
	for i := range env.report.Findings {
		if env.report.Findings[i].ID == id {
			env.report.Findings[i].Evidence += "\n" + evidence
			return true
		}
	}
	return false
}

// Dial opens a connection to an endpoint (TCP, TLS, or WebSocket) for a
// probe that sends no secret: over TLS it does not verify the certificate
// (tls-cert judges it), so that an untrusted certificate does not pass for
// a refusal.
func (env *Env) Dial(ctx context.Context, ep Endpoint) (net.Conn, error) {
	return env.DialAs(ctx, ep, nil)
}

// DialAs opens a connection to send id's credentials over: over TLS the
// certificate is verified (unless Options.Insecure), so that a password
// never goes to an impostor. Without a username it is Dial. What is
// written goes out as it is (half a packet included).
func (env *Env) DialAs(ctx context.Context, ep Endpoint, id *Identity) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
	defer cancel()
	return mqttconn.DialRaw(ctx, ep.url(), env.dialTLS(ep, id))
}

// dialPaho opens a connection for a paho client as id (as DialAs does):
// over TLS and WebSocket, each MQTT packet goes out whole (mqttconn.Dial).
func (env *Env) dialPaho(ctx context.Context, ep Endpoint, id *Identity) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
	defer cancel()
	return mqttconn.Dial(ctx, ep.url(), env.dialTLS(ep, id))
}

// dialTLS is the TLS configuration of a connection as id: without a
// username the certificate is not verified.
func (env *Env) dialTLS(ep Endpoint, id *Identity) *tls.Config {
	cfg := env.TLSConfig(ep.Host)
	if id == nil || id.Anonymous() {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// Session is an MQTT 5 connection of a probe.
type Session struct {
	*paho.Client
	Connack *paho.Connack
	// Messages receives what the session's subscriptions deliver (a full
	// channel drops).
	Messages chan *paho.Publish
	// Disconnected is closed when the server ends the connection.
	Disconnected chan struct{}
}

// Connect opens an MQTT 5 session to ep as id (nil: anonymous). A refused
// CONNECT returns the CONNACK with an error.
func (env *Env) Connect(ctx context.Context, ep Endpoint, clientID string, id *Identity) (*Session, error) {
	return env.connectWith(ctx, ep, clientID, id, nil)
}

// connectWith is Connect with a last say on the CONNECT packet (edit may
// be nil).
func (env *Env) connectWith(ctx context.Context, ep Endpoint, clientID string, id *Identity, edit func(*paho.Connect)) (*Session, error) {
	conn, err := env.dialPaho(ctx, ep, id)
	if err != nil {
		return nil, err
	}
	s := &Session{Messages: make(chan *paho.Publish, 1024), Disconnected: make(chan struct{})}
	var once sync.Once
	gone := func() { once.Do(func() { close(s.Disconnected) }) }
	s.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case s.Messages <- pr.Packet:
			default:
			}
			return true, nil
		}},
		OnServerDisconnect: func(*paho.Disconnect) { gone() },
		OnClientError:      func(error) { gone() },
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if id != nil && id.Username != "" {
		cp.Username, cp.UsernameFlag = id.Username, true
		cp.Password, cp.PasswordFlag = []byte(id.Password), true
	}
	if edit != nil {
		edit(cp)
	}
	cctx, cancel := context.WithTimeout(ctx, env.Opts.Timeout)
	defer cancel()
	ack, err := s.Client.Connect(cctx, cp)
	s.Connack = ack
	if err != nil {
		conn.Close()
		return s, err
	}
	return s, nil
}

// Close disconnects the session.
func (s *Session) Close() {
	if s == nil || s.Client == nil {
		return
	}
	done := make(chan struct{})
	go func() { s.Client.Disconnect(&paho.Disconnect{ReasonCode: 0}); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// Collect gathers the messages a session receives for d (or until n).
func (s *Session) Collect(ctx context.Context, d time.Duration, n int) []*paho.Publish {
	var out []*paho.Publish
	t := time.NewTimer(d)
	defer t.Stop()
	for len(out) < n {
		select {
		case m := <-s.Messages:
			out = append(out, m)
		case <-t.C:
			return out
		case <-ctx.Done():
			return out
		}
	}
	return out
}

// Await waits up to d for a message with this topic and payload, and
// drops the others that come meanwhile (a late answer to an earlier
// probe).
func (s *Session) Await(ctx context.Context, topic, payload string, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case m := <-s.Messages:
			if m.Topic == topic && string(m.Payload) == payload {
				return true
			}
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// probeBases are topic prefixes where the audit may try to publish and
// subscribe its probes as id, most neutral first: its own namespace, then
// the places ACLs usually give a user (Vigil's vigil/+/%u/#, devices/%u/#,
// %u/#, and the levels of topics seen that carry the username). Nothing
// reads vigil-audit levels; nonce keeps concurrent audits apart.
func (env *Env) probeBases(id *Identity, nonce string) []string {
	out := []string{"vigil-audit/" + nonce}
	u := ""
	if id != nil {
		u = id.Username
	}
	if u == "" || strings.ContainsAny(u, "+#/\x00") {
		return out
	}
	add := func(prefix string) {
		b := prefix + "/vigil-audit/" + nonce
		if !slices.Contains(out, b) && len(out) < 8 {
			out = append(out, b)
		}
	}
	out = append(out, "vigil/vigil-audit/"+u+"/"+nonce) // vigil/+/%u/#: "vigil-audit" stands for the site
	for _, t := range env.Topics() {
		levels := strings.Split(t, "/")
		if i := slices.Index(levels, u); i >= 0 {
			add(strings.Join(levels[:i+1], "/"))
		}
	}
	add("devices/" + u)
	add(u)
	return out
}
