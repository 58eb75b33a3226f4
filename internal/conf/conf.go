// Package conf holds Vigil's configuration: the defaults, strict YAML
// decoding of vigil.yaml, VIGIL_<SECTION>_<KEY> environment overrides and
// validation with messages that name the wrong key.
package conf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Config is the whole of Vigil's configuration. Every field has a default set
// by New; the annotated vigil.yaml at the repository root documents each key.
type Config struct {
	Log       Log                   `yaml:"log"`
	Data      Data                  `yaml:"data"`
	Database  Database              `yaml:"database"`
	MQTT      MQTT                  `yaml:"mqtt"`
	HTTP      HTTP                  `yaml:"http"`
	Auth      Auth                  `yaml:"auth"`
	Telemetry Telemetry             `yaml:"telemetry"`
	Detection Detection             `yaml:"detection"`
	Agents    Agents                `yaml:"agents"`
	Recording Recording             `yaml:"recording"`
	Retention Retention             `yaml:"retention"`
	Plans     map[string]Plan       `yaml:"plans"`
	Sites     map[string]SiteConfig `yaml:"sites"`
	Cameras   map[string]Camera     `yaml:"cameras"`
	Demo      Demo                  `yaml:"demo"`
	Audit     Audit                 `yaml:"audit"`
	Watch     Watch                 `yaml:"watch"`
	Notify    Notify                `yaml:"notify"`
	// HomeAssistant: MQTT discovery, read and published.
	HomeAssistant HomeAssistant `yaml:"homeassistant"`
}

// HomeAssistant configures Home Assistant MQTT discovery: reading the
// sensors other projects announce (Zigbee2MQTT, Tasmota, ESPHome,
// Shelly), and announcing Vigil's devices, sites and cameras.
type HomeAssistant struct {
	// Discovery: read the discovery configs under Prefix.
	Discovery bool `yaml:"discovery"`
	// Prefix is Home Assistant's discovery prefix.
	Prefix string `yaml:"prefix"`
	// Site is where a discovered device goes until it is placed
	// ("": telemetry.legacy_site).
	Site string `yaml:"site"`
	// Publish Vigil's own discovery configs: auto (once something uses
	// the prefix: a config, or Home Assistant's birth message), on or off.
	Publish string `yaml:"publish"`
	// Devices places discovered devices, by Vigil device id, device name
	// or device identifier: site and detection zone.
	Devices map[string]Placement `yaml:"devices"`
}

// Placement is the site and detection zone of a discovered device.
type Placement struct {
	Site string `yaml:"site"`
	Zone string `yaml:"zone"`
}

// Publish modes of homeassistant.publish.
const (
	PublishAuto = "auto"
	PublishOn   = "on"
	PublishOff  = "off"
)

// Detection configures intrusion detection.
type Detection struct {
	// ThresholdM: a distance below this (metres) is someone near.
	ThresholdM float64 `yaml:"threshold_m"`
	// Consecutive readings below the threshold make a detection...
	Consecutive int `yaml:"consecutive"`
	// ...or readings below it for at least this long (0: off).
	MinDuration time.Duration `yaml:"min_duration"`
	// Devices overrides threshold_m and consecutive per sensor.
	Devices map[string]DetectionDevice `yaml:"devices"`
	// Zones link sensors to the cameras that record when they detect.
	Zones map[string]Zone `yaml:"zones"`
}

// DetectionDevice overrides detection settings for one sensor.
type DetectionDevice struct {
	ThresholdM  float64 `yaml:"threshold_m"`
	Consecutive int     `yaml:"consecutive"`
}

// Zone is a set of sensors and the cameras that watch them.
type Zone struct {
	Sensors []string `yaml:"sensors"`
	Cameras []string `yaml:"cameras"`
	// Triggers are the binary sensors' device classes that record here
	// besides motion, occupancy and presence, which always do: door,
	// window, opening, garage_door.
	Triggers []string `yaml:"triggers"`
}

// ZoneTriggers are the device classes a zone may add to its triggers.
var ZoneTriggers = []string{"door", "window", "opening", "garage_door"}

// Agents configures the video ingest agents and their autoscaling.
type Agents struct {
	Runtime           string        `yaml:"runtime"` // process or docker
	Capacity          int           `yaml:"capacity"`
	Min               int           `yaml:"min"`
	Max               int           `yaml:"max"`
	ScaleDownCooldown time.Duration `yaml:"scale_down_cooldown"`
	HeartbeatTimeout  time.Duration `yaml:"heartbeat_timeout"`
	Idle              time.Duration `yaml:"idle"`
	Listen            string        `yaml:"listen"`
	Binary            string        `yaml:"binary"`
	DockerImage       string        `yaml:"docker_image"`
	DockerNetwork     string        `yaml:"docker_network"`
	// DockerMemory (bytes) and DockerPids (processes and threads) limit
	// each agent container; 0: no limit.
	DockerMemory int64 `yaml:"docker_memory"`
	DockerPids   int64 `yaml:"docker_pids"`
	// RTSPCapacity is how many RTSP recordings an agent takes, and
	// RingCapacity how many RTSP cameras' pre-roll it keeps, when it has
	// nothing else; Capacity counts JPEG streams. A mix takes each
	// stream's share (docs/ingest.md).
	RTSPCapacity int `yaml:"rtsp_capacity"`
	RingCapacity int `yaml:"ring_capacity"`
}

// Agent runtimes.
const (
	RuntimeProcess = "process"
	RuntimeDocker  = "docker"
)

// Recording configures clips.
type Recording struct {
	ClipSeconds    int `yaml:"clip_seconds"`
	PreRollSeconds int `yaml:"pre_roll_seconds"`
	// LiveSeconds is how long a camera streams when someone opens its live
	// view; the page asks again while it stays open.
	LiveSeconds int `yaml:"live_seconds"`
	// Storage is the clip storage root; "" means <data.dir>/clips. What
	// Vigil may change in it depends on whether it is inside data.dir
	// (coord.PrepareStorage).
	Storage   string `yaml:"storage"`
	Transcode bool   `yaml:"transcode"`
}

// Retention limits the clips kept.
type Retention struct {
	MaxClips int   `yaml:"max_clips"`
	MaxBytes int64 `yaml:"max_bytes"`
}

// Plan is a service tier a site can be on.
type Plan struct {
	MaxClips       int  `yaml:"max_clips" json:"max_clips"`
	Width          int  `yaml:"width" json:"width"`
	Height         int  `yaml:"height" json:"height"`
	FPS            int  `yaml:"fps" json:"fps"`
	Quality        int  `yaml:"quality" json:"quality"`
	DedicatedAgent bool `yaml:"dedicated_agent" json:"dedicated_agent"`
}

// SiteConfig is per-site configuration.
type SiteConfig struct {
	Plan string `yaml:"plan"`
}

// Camera is per-camera configuration: a priority for any camera, and the
// whole camera for an RTSP one (IP cameras people buy: Reolink,
// Hikvision, Dahua, Amcrest, Tapo, UniFi), which agents pull.
type Camera struct {
	Priority int `yaml:"priority"`
	// Name is shown in the UI ("" shows the id).
	Name string `yaml:"name"`
	// Site and Zone (RTSP cameras): the camera records when a sensor of
	// the zone detects someone (detection.zones, or sensors placed there).
	Site string `yaml:"site"`
	Zone string `yaml:"zone"`
	// RTSP makes it an RTSP camera.
	RTSP *RTSPCamera `yaml:"rtsp"`
}

// RTSPCamera is an IP camera's RTSP streams and login. The login never
// sits in the URL; the password comes from the environment or a file
// (never vigil.yaml), and is never logged or shown.
type RTSPCamera struct {
	// URL is the main stream, recorded: rtsp://host:554/path.
	URL string `yaml:"url"`
	// SubURL, if set, is a smaller stream for live view.
	SubURL   string `yaml:"sub_url"`
	Username string `yaml:"username"`
	// PasswordEnv names an environment variable holding the password;
	// PasswordFile a file holding it (a Docker or systemd secret).
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
	// Transport: tcp (the default: through any firewall, no loss), udp,
	// or auto (UDP, then TCP if nothing comes).
	Transport string `yaml:"transport"`
	// Password is read from PasswordEnv or PasswordFile by Load.
	Password string `yaml:"-"`
}

// RTSPCameras returns the cameras with an RTSP stream.
func (c *Config) RTSPCameras() map[string]Camera {
	out := map[string]Camera{}
	for id, cam := range c.Cameras {
		if cam.RTSP != nil {
			out[id] = cam
		}
	}
	return out
}

// Log configures the process logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Data configures where Vigil keeps its state.
type Data struct {
	Dir string `yaml:"dir"`
}

// Database chooses the database: SQLite in data.dir by default, or a
// PostgreSQL database that several nodes share.
type Database struct {
	// URL is a postgres:// or postgresql:// URL; "" means SQLite at
	// <data.dir>/vigil.db. It may hold a password: set it through
	// VIGIL_DATABASE_URL rather than in a file; it is never logged.
	URL string `yaml:"url"`
}

// MQTT modes.
const (
	MQTTEmbedded = "embedded" // Vigil's own broker (the default)
	MQTTExternal = "external" // a broker the user runs: Mosquitto, EMQX, HiveMQ, VerneMQ
)

// MQTT configures the embedded broker, or the external broker Vigil uses
// in its place.
type MQTT struct {
	// Mode is embedded (Vigil's own broker, the keys below) or external
	// (the broker at URLs; no broker starts, and the embedded broker's
	// keys are not used).
	Mode string `yaml:"mode"`

	// The external broker (mode external); each key is mqtt.<key>.
	// URLs are the broker's (mqtt://, mqtts://, ws://, wss://), tried in
	// order: the next one when a connection fails.
	URLs []string `yaml:"urls"`
	// Username and the password (from the environment variable
	// PasswordEnv names, or the first line of PasswordFile; never in
	// this file) are the nodes' login.
	Username     string `yaml:"username"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
	// CA verifies the broker's certificate (else the system's roots);
	// ClientCert and ClientKey, if set, are Vigil's certificate.
	CA         string `yaml:"ca"`
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	// ShareGroup is the shared subscription group the nodes take
	// telemetry in ($share/<group>/...).
	ShareGroup string `yaml:"share_group"`
	// SessionExpiry is how long the broker keeps a node's telemetry
	// session (and the readings it did not acknowledge) while the node is
	// away.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// AgentUsername and its password are the login of the ingest agents
	// (the broker knows no per-agent logins Vigil could make).
	AgentUsername     string `yaml:"agent_username"`
	AgentPasswordEnv  string `yaml:"agent_password_env"`
	AgentPasswordFile string `yaml:"agent_password_file"`

	Listen    string `yaml:"listen"`
	WSListen  string `yaml:"ws_listen"`
	TLSListen string `yaml:"tls_listen"`
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
	Anonymous string `yaml:"anonymous"`
	// AnonymousPublish and AnonymousSubscribe are the ACL of anonymous
	// clients, where Anonymous lets them in: what the paper's devices
	// and local tools need, never Vigil's command topics.
	AnonymousPublish   []string `yaml:"anonymous_publish"`
	AnonymousSubscribe []string `yaml:"anonymous_subscribe"`
	// WSOrigins are the web origins (scheme://host[:port]) whose pages may
	// open MQTT over WebSocket; a browser's request from any other origin
	// is refused. Clients that send no Origin (not browsers) are not
	// affected.
	WSOrigins     []string      `yaml:"ws_origins"`
	MaxPacketSize int           `yaml:"max_packet_size"`
	SysInterval   time.Duration `yaml:"sys_interval"`
	// MaxQueuedMessages is the length of each client's outbound queue
	// (Mosquitto's max_queued_messages); SlowSubscriberWait how long a
	// publisher waits for a subscriber's nearly full queue before its QoS
	// 1 and 2 messages may be dropped (0: drop at once).
	MaxQueuedMessages  int           `yaml:"max_queued_messages"`
	SlowSubscriberWait time.Duration `yaml:"slow_subscriber_wait"`
	// ClientIDGrace is how long a client id stays the last login's that
	// held it, after it disconnected: no other login may take it (0: only
	// while a session holds it).
	ClientIDGrace time.Duration `yaml:"client_id_grace"`
	// WriteTimeout closes a connection whose client does not read what
	// is written to it within this.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ConnectTimeout closes a connection that has not sent its CONNECT
	// within it (a slow-loris client holds no connection for long).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	Persistence    bool          `yaml:"persistence"`

	// MaxRetainedMessages and MaxRetainedBytes are how many retained
	// messages a login may hold across all topics, and their total size
	// (topics, payloads and properties); AnonymousMaxRetained* the same for
	// all anonymous clients together. MaxSubscriptions is how many
	// subscriptions the sessions of one login may hold together, connected
	// or persistent and offline; AnonymousMaxSubscriptions the same for all
	// anonymous clients. Vigil's own logins have no quota.
	MaxRetainedMessages          int `yaml:"max_retained_messages"`
	MaxRetainedBytes             int `yaml:"max_retained_bytes"`
	AnonymousMaxRetainedMessages int `yaml:"anonymous_max_retained_messages"`
	AnonymousMaxRetainedBytes    int `yaml:"anonymous_max_retained_bytes"`
	MaxSubscriptions             int `yaml:"max_subscriptions"`
	AnonymousMaxSubscriptions    int `yaml:"anonymous_max_subscriptions"`

	// BlockAuthFailures failed CONNECT authentications from one address
	// within BlockWindow block that address (0: never).
	BlockAuthFailures int           `yaml:"block_auth_failures"`
	BlockWindow       time.Duration `yaml:"block_window"`
	// BlockFloodMessages is the PUBLISH rate (messages a second, averaged
	// over 3 s) above which a client is disconnected and its client id and
	// address blocked (0: never).
	BlockFloodMessages int `yaml:"block_flood_messages"`
	// BlockDuration is how long a block lasts.
	BlockDuration time.Duration `yaml:"block_duration"`
	// BlockExempt are addresses and CIDRs that are never blocked.
	BlockExempt []string `yaml:"block_exempt"`
}

// BlockExemptPrefixes parses mqtt.block_exempt (validated); IPv4-mapped
// IPv6 forms become IPv4.
func (m MQTT) BlockExemptPrefixes() []netip.Prefix {
	out := []netip.Prefix{}
	for _, s := range m.BlockExempt {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parsePrefix reads an address (a prefix of its full length) or a CIDR.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Anonymous access policies for the MQTT listeners.
const (
	// AnonymousLoopback allows anonymous clients on the TCP listener
	// when it is bound to a loopback address (Mosquitto 2's local-only
	// mode), with the ACL of MQTT.AnonymousPublish and
	// AnonymousSubscribe; never on WebSocket, TLS or other addresses.
	AnonymousLoopback = "loopback"
	// AnonymousNever requires every client to authenticate.
	AnonymousNever = "never"
)

// HTTP configures the HTTP server (API, health, metrics).
type HTTP struct {
	Listen string `yaml:"listen"`
	// PublicURL is how people reach the web UI (e.g. behind a reverse
	// proxy with TLS): links in notifications start with it.
	PublicURL string `yaml:"public_url"`
	// TrustedProxies are the reverse proxies (addresses or CIDRs) whose
	// X-Forwarded-For and X-Forwarded-Proto headers are believed.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// ProxyNets parses http.trusted_proxies (validated).
func (h HTTP) ProxyNets() []*net.IPNet {
	out := []*net.IPNet{}
	for _, p := range h.TrustedProxies {
		if n, err := parseNet(p); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// parseNet reads an address or a CIDR.
func parseNet(s string) (*net.IPNet, error) {
	if ip := net.ParseIP(s); ip != nil {
		bits := 32
		if ip.To4() == nil {
			bits = 128
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
	}
	_, n, err := net.ParseCIDR(s)
	return n, err
}

// Auth configures password hashing.
type Auth struct {
	BcryptCost int `yaml:"bcrypt_cost"`
}

// Telemetry configures the device telemetry pipeline.
type Telemetry struct {
	Retention      time.Duration `yaml:"retention"`
	MaxPayload     int           `yaml:"max_payload"`
	QueueSize      int           `yaml:"queue_size"`
	BatchSize      int           `yaml:"batch_size"`
	FlushInterval  time.Duration `yaml:"flush_interval"`
	OfflineAfter   time.Duration `yaml:"offline_after"`
	LegacySite     string        `yaml:"legacy_site"`
	LegacyTimezone string        `yaml:"legacy_timezone"`
	LogInterval    time.Duration `yaml:"log_interval"`
}

// Audit configures vigil up's audit of its own broker.
type Audit struct {
	OnStart bool          `yaml:"on_start"` // a few seconds after start
	Every   time.Duration `yaml:"every"`    // then this often (0: never again)
}

// Watch configures the brokers vigil up watches for availability.
type Watch struct {
	Targets  []WatchTarget `yaml:"targets"`
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	Latency  time.Duration `yaml:"latency"` // a slower round trip is a breach (0: off)
}

// WatchTarget is one broker to watch.
type WatchTarget struct {
	Name     string `yaml:"name"`
	URL      string `yaml:"url"`
	Username string `yaml:"username"`
	// PasswordEnv names the environment variable that holds the password
	// (passwords stay out of vigil.yaml).
	PasswordEnv string `yaml:"password_env"`
	CA          string `yaml:"ca"`
	Insecure    bool   `yaml:"insecure"`
}

// External tells whether Vigil uses an external broker.
func (m MQTT) External() bool { return m.Mode == MQTTExternal }

// Secret reads a password from the environment variable env names or
// the first line of file; key names the config key for errors.
func Secret(key, env, file string, getenv func(string) (string, bool)) (string, error) {
	switch {
	case env != "" && file != "":
		return "", fmt.Errorf("%s_env and %s_file are both set: keep one", key, key)
	case env != "":
		v, ok := getenv(env)
		if !ok {
			return "", fmt.Errorf("%s_env: %s is not set", key, env)
		}
		return v, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", key, err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimRight(line, "\r"), nil
	}
	return "", nil
}

// Notify configures where notifications may go.
type Notify struct {
	// PushServices are the hosts ("*.example.com" for any name under it)
	// whose https URLs Web Push subscriptions may use.
	PushServices []string `yaml:"push_services"`
	// AllowTargets are loopback or link-local addresses and CIDRs that
	// webhooks, ntfy and Web Push may reach anyway.
	AllowTargets []string `yaml:"allow_targets"`
}

// AllowTargetPrefixes parses notify.allow_targets (validated).
func (n Notify) AllowTargetPrefixes() []netip.Prefix {
	out := []netip.Prefix{}
	for _, s := range n.AllowTargets {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Demo configures the built-in demo fleet started by `vigil up --demo`.
type Demo struct {
	Enabled        bool          `yaml:"enabled"`
	Devices        int           `yaml:"devices"`
	Period         time.Duration `yaml:"period"`
	Cameras        int           `yaml:"cameras"`
	IntrusionEvery time.Duration `yaml:"intrusion_every"`
}

// New returns a Config with every default set. The shipped vigil.yaml must
// decode to exactly this value (a test checks it).
func New() *Config {
	return &Config{
		Log:  Log{Level: "info", Format: "text"},
		Data: Data{Dir: "./vigil-data"},
		MQTT: MQTT{
			Mode: MQTTEmbedded,
			URLs: []string{}, ShareGroup: "vigil", SessionExpiry: 24 * time.Hour,
			Listen:    "127.0.0.1:1883",
			WSListen:  "127.0.0.1:9001",
			Anonymous: AnonymousLoopback,
			AnonymousPublish: []string{"sensors/#", "vigil/+/+/telemetry", "vigil/+/+/status", "vigil/+/+/motion",
				"vigil/+/+/meta", "vigil/+/+/stream", "vigil-audit/#", "vigil-watch/#"},
			AnonymousSubscribe: []string{"vigil/#", "sensors/#", "$SYS/#", "vigil-audit/#", "vigil-watch/#"},
			WSOrigins:          []string{},
			MaxPacketSize:      1 << 20,
			MaxQueuedMessages:  512,
			SlowSubscriberWait: time.Second,
			WriteTimeout:       10 * time.Second,
			ClientIDGrace:      24 * time.Hour,
			SysInterval:        10 * time.Second,
			ConnectTimeout:     10 * time.Second,
			Persistence:        true,

			MaxRetainedMessages: 100,
			MaxRetainedBytes:    1 << 20,
			// Anonymous clients are one login for everything on loopback
			// without a password: the paper's devices, `vigil sim` and
			// `vigil bench` fleets, each device a retained status (and each
			// simulated camera a subscription to its cmd topic).
			AnonymousMaxRetainedMessages: 20000,
			AnonymousMaxRetainedBytes:    16 << 20,
			MaxSubscriptions:             1000,
			AnonymousMaxSubscriptions:    20000,

			BlockAuthFailures:  10,
			BlockWindow:        time.Minute,
			BlockFloodMessages: 1000,
			BlockDuration:      10 * time.Minute,
			// Loopback is Vigil's own side of the machine: its agents, the
			// demo fleet, its self-audit (which guesses passwords on
			// purpose), `vigil bench` and local tools. See docs/security.md
			// for when to remove it (a reverse proxy on the same host).
			BlockExempt: []string{"127.0.0.0/8", "::1"},
		},
		HTTP: HTTP{Listen: "127.0.0.1:8080", TrustedProxies: []string{}},
		Auth: Auth{BcryptCost: 10},
		Telemetry: Telemetry{
			Retention:      14 * 24 * time.Hour,
			MaxPayload:     8192,
			QueueSize:      50000,
			BatchSize:      2000,
			FlushInterval:  100 * time.Millisecond,
			OfflineAfter:   2 * time.Minute,
			LegacySite:     "default",
			LegacyTimezone: "Local",
			LogInterval:    time.Minute,
		},
		Detection: Detection{ThresholdM: 1.0, Consecutive: 2, Devices: map[string]DetectionDevice{}, Zones: map[string]Zone{}},
		Agents: Agents{
			Runtime: RuntimeProcess, Capacity: 3, RTSPCapacity: 16, RingCapacity: 32, Min: 1, Max: 8,
			ScaleDownCooldown: 30 * time.Second, HeartbeatTimeout: 5 * time.Second, Idle: 3 * time.Second,
			Listen: "127.0.0.1", DockerImage: "vigil-agent:latest", DockerNetwork: "vigil",
			DockerMemory: 256 << 20, DockerPids: 256,
		},
		Recording: Recording{ClipSeconds: 30, PreRollSeconds: 5, LiveSeconds: 120, Transcode: true},
		Retention: Retention{MaxClips: 50},
		Plans: map[string]Plan{
			"free": {MaxClips: 50, Width: 640, Height: 480, FPS: 10, Quality: 60},
			"plus": {MaxClips: 100, Width: 1280, Height: 720, FPS: 15, Quality: 75},
			"pro":  {MaxClips: 500, Width: 1920, Height: 1080, FPS: 25, Quality: 85, DedicatedAgent: true},
		},
		Sites:         map[string]SiteConfig{},
		Cameras:       map[string]Camera{},
		Demo:          Demo{Enabled: false, Devices: 6, Period: 2 * time.Second, Cameras: 1, IntrusionEvery: time.Minute},
		Audit:         Audit{OnStart: true, Every: 24 * time.Hour},
		HomeAssistant: HomeAssistant{Discovery: true, Prefix: "homeassistant", Publish: PublishAuto, Devices: map[string]Placement{}},
		Watch:         Watch{Targets: []WatchTarget{}, Interval: 30 * time.Second, Timeout: 5 * time.Second, Latency: time.Second},
		Notify: Notify{
			// What browsers use: Chrome, Opera, Brave, Samsung Internet
			// (FCM), Firefox, Safari, Edge (WNS).
			PushServices: []string{"fcm.googleapis.com", "updates.push.services.mozilla.com", "web.push.apple.com", "*.notify.windows.com"},
			AllowTargets: []string{},
		},
	}
}
