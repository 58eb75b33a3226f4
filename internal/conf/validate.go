package conf

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/users"
)

// Validate checks every key and returns all problems at once, each naming
// the key, what it holds and what is allowed.
func (c *Config) Validate() error {
	var pb problems
	c.validateBasics(&pb)
	c.validateMQTT(&pb)
	c.validateAuth(&pb)
	c.validateTelemetry(&pb)
	c.validateDetection(&pb)
	c.validateVideo(&pb)
	c.validateDemo(&pb)
	c.validateWatch(&pb)
	c.validateNotify(&pb)
	c.validateHomeAssistant(&pb)
	c.validateCameras(&pb)
	return errors.Join(pb.errs...)
}

// problems collects what is wrong with a configuration, each error
// naming its key.
type problems struct{ errs []error }

func (p *problems) bad(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// validateExternal checks the keys of mqtt.mode external.
func (c *Config) validateExternal(pb *problems) {
	m := c.MQTT
	if len(m.URLs) == 0 {
		pb.bad("mqtt.urls", "mqtt.mode external needs the broker's URLs, e.g. [mqtt://broker.lan:1883]")
	}
	for _, u := range m.URLs {
		p, err := url.Parse(u)
		switch {
		case err != nil || p.Host == "" || !slices.Contains([]string{"mqtt", "tcp", "mqtts", "ssl", "tls", "ws", "wss"}, p.Scheme):
			pb.bad("mqtt.urls", "a URL is not a broker URL such as mqtt://host:1883, mqtts://host:8883 or wss://host/mqtt")
		case p.User != nil:
			// URLs are logged and shown: no login in them.
			pb.bad("mqtt.urls", "%s holds a login: set mqtt.username and mqtt.password_env or mqtt.password_file instead", p.Redacted())
		}
	}
	if m.AgentUsername != "" && m.AgentPasswordEnv == "" && m.AgentPasswordFile == "" {
		pb.bad("mqtt.agent_username", "needs mqtt.agent_password_env or mqtt.agent_password_file")
	}
	if c.Demo.Enabled && c.Database.URL != "" {
		pb.bad("demo.enabled", "the demo fleet is for one node; with mqtt.mode external and database.url several nodes would run it at once")
	}
	if m.PasswordEnv != "" && m.PasswordFile != "" {
		pb.bad("mqtt.password_env", "mqtt.password_env and mqtt.password_file are both set: keep one")
	}
	if m.AgentPasswordEnv != "" && m.AgentPasswordFile != "" {
		pb.bad("mqtt.agent_password_env", "mqtt.agent_password_env and mqtt.agent_password_file are both set: keep one")
	}
	if (m.ClientCert == "") != (m.ClientKey == "") {
		pb.bad("mqtt.client_cert", "mqtt.client_cert and mqtt.client_key go together")
	}
	if g := m.ShareGroup; g == "" || strings.ContainsAny(g, "/+#") {
		pb.bad("mqtt.share_group", "%q is not a shared subscription group (a name without /, + or #)", g)
	}
	if m.SessionExpiry < 0 {
		pb.bad("mqtt.session_expiry", "%v is negative", m.SessionExpiry)
	}
	if c.Agents.Runtime == RuntimeDocker && m.CA != "" {
		pb.bad("agents.runtime", "docker agents cannot be given mqtt.ca yet: use the process runtime, or a broker certificate from a public CA")
	}
}

// validateBasics checks log, data, the database and the listeners.
func (c *Config) validateBasics(pb *problems) {
	if u := c.Database.URL; u != "" && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		pb.bad("database.url", "not a postgres:// or postgresql:// URL (leave it empty for SQLite in data.dir)")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		pb.bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		pb.bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if c.Data.Dir == "" {
		pb.bad("data.dir", "must not be empty")
	}

	checkAddr := func(key, addr string, optional bool) {
		if addr == "" {
			if !optional {
				pb.bad(key, "must not be empty")
			}
			return
		}
		if err := checkListenAddr(addr); err != nil {
			pb.bad(key, "%v", err)
		}
	}
	checkAddr("mqtt.listen", c.MQTT.Listen, true)
	checkAddr("mqtt.ws_listen", c.MQTT.WSListen, true)
	checkAddr("mqtt.tls_listen", c.MQTT.TLSListen, true)
	checkAddr("http.listen", c.HTTP.Listen, false)
	for _, p := range c.HTTP.TrustedProxies {
		if _, err := parseNet(p); err != nil {
			pb.bad("http.trusted_proxies", "%q is neither an IP address nor a CIDR", p)
		}
	}
	if u := c.HTTP.PublicURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			pb.bad("http.public_url", "%q is not an http or https URL", u)
		}
	}
}

// validateMQTT checks the broker.
func (c *Config) validateMQTT(pb *problems) {
	switch c.MQTT.Mode {
	case MQTTEmbedded:
	case MQTTExternal:
		c.validateExternal(pb)
	default:
		pb.bad("mqtt.mode", "%q is not one of %s, %s", c.MQTT.Mode, MQTTEmbedded, MQTTExternal)
	}
	if c.MQTT.Mode != MQTTExternal && c.MQTT.Listen == "" && c.MQTT.WSListen == "" && c.MQTT.TLSListen == "" {
		pb.bad("mqtt.listen", "at least one of mqtt.listen, mqtt.ws_listen, mqtt.tls_listen must be set")
	}
	if c.MQTT.TLSListen != "" && (c.MQTT.TLSCert == "" || c.MQTT.TLSKey == "") {
		pb.bad("mqtt.tls_listen", "needs mqtt.tls_cert and mqtt.tls_key")
	}
	switch c.MQTT.Anonymous {
	case AnonymousLoopback, AnonymousNever:
	default:
		pb.bad("mqtt.anonymous", "%q is not one of %s, %s", c.MQTT.Anonymous, AnonymousLoopback, AnonymousNever)
	}
	for _, acl := range []struct {
		key      string
		patterns []string
	}{{"mqtt.anonymous_publish", c.MQTT.AnonymousPublish}, {"mqtt.anonymous_subscribe", c.MQTT.AnonymousSubscribe}} {
		for _, p := range acl.patterns {
			if !users.ValidFilter(p) {
				pb.bad(acl.key, "%q is not a valid MQTT topic filter", p)
			}
		}
	}
	for _, o := range c.MQTT.WSOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			pb.bad("mqtt.ws_origins", "%q is not an origin such as https://dashboard.example:8443", o)
		}
	}
	if q := c.MQTT.MaxQueuedMessages; q < 64 || q > 1<<16 {
		pb.bad("mqtt.max_queued_messages", "%d is outside 64..65536", q)
	}
	if g := c.MQTT.ClientIDGrace; g < 0 || g > 30*24*time.Hour {
		pb.bad("mqtt.client_id_grace", "%v is outside 0s..720h", g)
	}
	if w := c.MQTT.WriteTimeout; w < time.Second || w > 5*time.Minute {
		pb.bad("mqtt.write_timeout", "%v is outside 1s..5m", w)
	}
	if w := c.MQTT.SlowSubscriberWait; w < 0 || w > 10*time.Second {
		pb.bad("mqtt.slow_subscriber_wait", "%v is outside 0s..10s", w)
	}
	if c.MQTT.MaxPacketSize < 1024 || c.MQTT.MaxPacketSize > 256<<20 {
		pb.bad("mqtt.max_packet_size", "%d is outside 1024..268435456 bytes", c.MQTT.MaxPacketSize)
	}
	if t := c.MQTT.ConnectTimeout; t < time.Second || t > 5*time.Minute {
		pb.bad("mqtt.connect_timeout", "%v is outside 1s..5m", t)
	}
	if c.MQTT.SysInterval < time.Second {
		pb.bad("mqtt.sys_interval", "%v is below the minimum of 1s", c.MQTT.SysInterval)
	}
	for _, q := range []struct {
		key       string
		n, lo, hi int
		unit      string
	}{
		{"mqtt.max_retained_messages", c.MQTT.MaxRetainedMessages, 1, 1000000, "messages"},
		{"mqtt.max_retained_bytes", c.MQTT.MaxRetainedBytes, 1024, 1 << 30, "bytes"},
		{"mqtt.anonymous_max_retained_messages", c.MQTT.AnonymousMaxRetainedMessages, 1, 1000000, "messages"},
		{"mqtt.anonymous_max_retained_bytes", c.MQTT.AnonymousMaxRetainedBytes, 1024, 1 << 30, "bytes"},
		{"mqtt.max_subscriptions", c.MQTT.MaxSubscriptions, 1, 1000000, "subscriptions"},
		{"mqtt.anonymous_max_subscriptions", c.MQTT.AnonymousMaxSubscriptions, 1, 1000000, "subscriptions"},
	} {
		if q.n < q.lo || q.n > q.hi {
			pb.bad(q.key, "%d is outside %d..%d %s", q.n, q.lo, q.hi, q.unit)
		}
	}
	if n := c.MQTT.BlockAuthFailures; n < 0 || n > 100000 {
		pb.bad("mqtt.block_auth_failures", "%d is outside 0..100000 (0: never block for failed logins)", n)
	}
	if w := c.MQTT.BlockWindow; w < time.Second || w > 24*time.Hour {
		pb.bad("mqtt.block_window", "%v is outside 1s..24h", w)
	}
	if n := c.MQTT.BlockFloodMessages; n < 0 || n > 10000000 {
		pb.bad("mqtt.block_flood_messages", "%d is outside 0..10000000 messages a second (0: never block for flooding)", n)
	}
	if d := c.MQTT.BlockDuration; d < time.Second || d > 8760*time.Hour {
		pb.bad("mqtt.block_duration", "%v is outside 1s..8760h", d)
	}
	for _, p := range c.MQTT.BlockExempt {
		if _, err := parsePrefix(p); err != nil {
			pb.bad("mqtt.block_exempt", "%q is neither an IP address nor a CIDR (for example 192.168.1.0/24)", p)
		}
	}
}

// validateAuth checks logins.
func (c *Config) validateAuth(pb *problems) {
	if c.Auth.BcryptCost < 4 || c.Auth.BcryptCost > 16 {
		pb.bad("auth.bcrypt_cost", "%d is outside 4..16", c.Auth.BcryptCost)
	}
}

// validateTelemetry checks the pipeline.
func (c *Config) validateTelemetry(pb *problems) {
	t := c.Telemetry
	if t.Retention < time.Hour {
		pb.bad("telemetry.retention", "%v is below the minimum of 1h", t.Retention)
	}
	if t.MaxPayload < 64 || t.MaxPayload > c.MQTT.MaxPacketSize {
		pb.bad("telemetry.max_payload", "%d is outside 64..mqtt.max_packet_size (%d)", t.MaxPayload, c.MQTT.MaxPacketSize)
	}
	if t.QueueSize < 1 {
		pb.bad("telemetry.queue_size", "%d must be at least 1", t.QueueSize)
	}
	if t.BatchSize < 1 || t.BatchSize > 100000 {
		pb.bad("telemetry.batch_size", "%d is outside 1..100000", t.BatchSize)
	}
	if t.FlushInterval < time.Millisecond || t.FlushInterval > time.Minute {
		pb.bad("telemetry.flush_interval", "%v is outside 1ms..1m", t.FlushInterval)
	}
	if t.OfflineAfter < 0 {
		pb.bad("telemetry.offline_after", "%v must not be negative (0 disables)", t.OfflineAfter)
	}
	if t.LegacySite == "" || !vigil.ValidName(t.LegacySite) {
		pb.bad("telemetry.legacy_site", "%q must be 1-64 characters of letters, digits, '-', '_' or '.'", t.LegacySite)
	}
	if _, err := time.LoadLocation(t.LegacyTimezone); err != nil {
		pb.bad("telemetry.legacy_timezone", "%q is not a time zone (use Local, UTC or an IANA name like Asia/Seoul)", t.LegacyTimezone)
	}
	if t.LogInterval < time.Second {
		pb.bad("telemetry.log_interval", "%v is below the minimum of 1s", t.LogInterval)
	}
}

// validateDetection checks detection.
func (c *Config) validateDetection(pb *problems) {
	d := c.Detection
	if d.ThresholdM <= 0 || d.ThresholdM > 100 {
		pb.bad("detection.threshold_m", "%v is outside (0, 100] metres", d.ThresholdM)
	}
	if d.Consecutive < 1 || d.Consecutive > 100 {
		pb.bad("detection.consecutive", "%d is outside 1..100", d.Consecutive)
	}
	if d.MinDuration < 0 {
		pb.bad("detection.min_duration", "must not be negative")
	}
	for id, dev := range d.Devices {
		if dev.ThresholdM < 0 || dev.Consecutive < 0 {
			pb.bad("detection.devices."+id, "threshold_m and consecutive must not be negative")
		}
	}
	for name, z := range d.Zones {
		if !vigil.ValidName(name) {
			pb.bad("detection.zones."+name, "a zone's name must be 1-64 letters, digits, '-', '_' or '.'")
		}
		if len(z.Cameras) == 0 && !c.rtspInZone(name) {
			pb.bad("detection.zones."+name, "needs cameras (sensors are those listed and those placed in the zone; RTSP cameras those whose zone it is)")
		}
		for _, t := range z.Triggers {
			if !slices.Contains(ZoneTriggers, t) {
				pb.bad("detection.zones."+name+".triggers", "%q is not one of %s (motion, occupancy and presence always trigger)", t, strings.Join(ZoneTriggers, ", "))
			}
		}
	}
}

// rtspInZone tells whether an RTSP camera is set in a zone.
func (c *Config) rtspInZone(zone string) bool {
	for _, cam := range c.Cameras {
		if cam.RTSP != nil && cam.Zone == zone {
			return true
		}
	}
	return false
}

// validateCameras checks the cameras section: RTSP cameras' streams,
// login, site and zone.
func (c *Config) validateCameras(pb *problems) {
	for id, cam := range c.Cameras {
		key := "cameras." + id
		if !vigil.ValidName(id) || vigil.Reserved(id) {
			pb.bad(key, "a camera's id must be 1-64 letters, digits, '-', '_' or '.'")
		}
		r := cam.RTSP
		if r == nil {
			if cam.Site != "" || cam.Zone != "" {
				pb.bad(key, "site and zone are for RTSP cameras (with rtsp.url); other cameras announce theirs")
			}
			continue
		}
		if cam.Site == "" || !vigil.ValidName(cam.Site) || vigil.Reserved(cam.Site) {
			pb.bad(key+".site", "an RTSP camera needs the site it belongs to (1-64 letters, digits, '-', '_' or '.')")
		}
		if cam.Zone != "" && !vigil.ValidName(cam.Zone) {
			pb.bad(key+".zone", "%q is not a zone name", cam.Zone)
		}
		for k, u := range map[string]string{"url": r.URL, "sub_url": r.SubURL} {
			if u == "" && k == "sub_url" {
				continue
			}
			p, err := url.Parse(u)
			switch {
			case u == "":
				pb.bad(key+".rtsp.url", "the camera's RTSP address, such as rtsp://192.168.1.20:554/stream1")
			case err != nil || (p.Scheme != "rtsp" && p.Scheme != "rtsps") || p.Host == "":
				pb.bad(key+".rtsp."+k, "not an rtsp:// URL")
			case p.User != nil:
				pb.bad(key+".rtsp."+k, "holds a login: put it in username and password_env (or password_file), which are never shown")
			}
		}
		switch r.Transport {
		case "", "tcp", "udp", "auto":
		default:
			pb.bad(key+".rtsp.transport", "%q is not tcp, udp or auto", r.Transport)
		}
		if r.Username == "" && (r.PasswordEnv != "" || r.PasswordFile != "") {
			pb.bad(key+".rtsp.username", "a password without a username")
		}
	}
	a := c.Agents
	if a.RTSPCapacity < 0 || a.RTSPCapacity > 1000 {
		pb.bad("agents.rtsp_capacity", "%d is outside 0..1000", a.RTSPCapacity)
	}
	if a.RingCapacity < 0 || a.RingCapacity > 1000 {
		pb.bad("agents.ring_capacity", "%d is outside 0..1000", a.RingCapacity)
	}
	if len(c.RTSPCameras()) > 0 && a.RTSPCapacity == 0 {
		pb.bad("agents.rtsp_capacity", "0, but cameras have RTSP streams: agents would record none")
	}
}

// validateHomeAssistant checks the homeassistant section.
func (c *Config) validateHomeAssistant(pb *problems) {
	h := c.HomeAssistant
	if h.Prefix == "" || strings.ContainsAny(h.Prefix, "+#\x00") || strings.HasPrefix(h.Prefix, "/") || strings.HasSuffix(h.Prefix, "/") || strings.HasPrefix(h.Prefix, "$") {
		pb.bad("homeassistant.prefix", "%q is not a topic prefix such as homeassistant", h.Prefix)
	}
	if h.Site != "" && (!vigil.ValidName(h.Site) || vigil.Reserved(h.Site)) {
		pb.bad("homeassistant.site", "%q must be 1-64 letters, digits, '-', '_' or '.'", h.Site)
	}
	if !slices.Contains([]string{PublishAuto, PublishOn, PublishOff}, h.Publish) {
		pb.bad("homeassistant.publish", "%q is not one of auto, on, off", h.Publish)
	}
	for k, p := range h.Devices {
		if p.Site != "" && (!vigil.ValidName(p.Site) || vigil.Reserved(p.Site)) {
			pb.bad("homeassistant.devices."+k+".site", "%q must be 1-64 letters, digits, '-', '_' or '.'", p.Site)
		}
		if p.Zone != "" && !vigil.ValidName(p.Zone) {
			pb.bad("homeassistant.devices."+k+".zone", "%q must be 1-64 letters, digits, '-', '_' or '.'", p.Zone)
		}
	}
}

// validateVideo checks agents, recording, retention, plans and sites.
func (c *Config) validateVideo(pb *problems) {
	a := c.Agents
	if a.Runtime != RuntimeProcess && a.Runtime != RuntimeDocker {
		pb.bad("agents.runtime", "%q is not one of %s, %s", a.Runtime, RuntimeProcess, RuntimeDocker)
	}
	if a.Capacity < 1 || a.Capacity > 1000 {
		pb.bad("agents.capacity", "%d is outside 1..1000", a.Capacity)
	}
	if a.Min < 1 {
		pb.bad("agents.min", "%d must be at least 1", a.Min)
	}
	if a.Max < a.Min || a.Max > 1000 {
		pb.bad("agents.max", "%d must be between agents.min (%d) and 1000", a.Max, a.Min)
	}
	if a.ScaleDownCooldown < 0 {
		pb.bad("agents.scale_down_cooldown", "must not be negative")
	}
	if a.HeartbeatTimeout < time.Second {
		pb.bad("agents.heartbeat_timeout", "%v is below 1s", a.HeartbeatTimeout)
	}
	if a.Idle < 500*time.Millisecond {
		pb.bad("agents.idle", "%v is below 500ms", a.Idle)
	}
	if net.ParseIP(a.Listen) == nil {
		pb.bad("agents.listen", "%q is not an IP address", a.Listen)
	}
	if m := a.DockerMemory; m != 0 && (m < 16<<20 || m > 1<<40) {
		pb.bad("agents.docker_memory", "%d is outside 16777216 (16 MiB)..1099511627776 bytes (0: no limit)", m)
	}
	if p := a.DockerPids; p != 0 && (p < 16 || p > 1000000) {
		pb.bad("agents.docker_pids", "%d is outside 16..1000000 (0: no limit)", p)
	}

	if r := c.Recording; r.ClipSeconds < 1 || r.ClipSeconds > 3600 {
		pb.bad("recording.clip_seconds", "%d is outside 1..3600", r.ClipSeconds)
	}
	if r := c.Recording; r.LiveSeconds < 10 || r.LiveSeconds > 3600 {
		pb.bad("recording.live_seconds", "%d is outside 10..3600", r.LiveSeconds)
	}
	if r := c.Recording; r.PreRollSeconds < 0 || r.PreRollSeconds > 60 {
		pb.bad("recording.pre_roll_seconds", "%d is outside 0..60", r.PreRollSeconds)
	}
	if c.Retention.MaxClips < 1 {
		pb.bad("retention.max_clips", "%d must be at least 1", c.Retention.MaxClips)
	}
	if c.Retention.MaxBytes < 0 {
		pb.bad("retention.max_bytes", "must not be negative (0: no quota)")
	}
	for name, pl := range c.Plans {
		key := "plans." + name
		if !vigil.ValidName(name) {
			pb.bad(key, "plan names are 1-64 letters, digits, '-', '_' or '.'")
		}
		if pl.MaxClips < 0 || pl.Width < 0 || pl.Width > 4096 || pl.Height < 0 || pl.Height > 4096 || pl.FPS < 0 || pl.FPS > 60 || pl.Quality < 0 || pl.Quality > 100 {
			pb.bad(key, "max_clips >= 0, width and height 0..4096, fps 0..60, quality 0..100 (0: the default)")
		}
	}
	for name, sc := range c.Sites {
		if _, ok := c.Plans[sc.Plan]; sc.Plan != "" && !ok {
			pb.bad("sites."+name+".plan", "no plan %q (plans: %s)", sc.Plan, strings.Join(slices.Sorted(maps.Keys(c.Plans)), ", "))
		}
	}
	if _, ok := c.Plans["free"]; !ok {
		pb.bad("plans", "a plan named free is needed: new sites start on it")
	}
}

// validateDemo checks the demo fleet and the self-audit.
func (c *Config) validateDemo(pb *problems) {
	if c.Demo.Devices < 1 || c.Demo.Devices > 1000 {
		pb.bad("demo.devices", "%d is outside 1..1000", c.Demo.Devices)
	}
	if c.Demo.Cameras < 0 || c.Demo.Cameras > 50 {
		pb.bad("demo.cameras", "%d is outside 0..50", c.Demo.Cameras)
	}
	if c.Demo.IntrusionEvery < 10*time.Second {
		pb.bad("demo.intrusion_every", "%v is below 10s", c.Demo.IntrusionEvery)
	}
	if c.Demo.Period < 100*time.Millisecond {
		pb.bad("demo.period", "%v is below the minimum of 100ms", c.Demo.Period)
	}
	if e := c.Audit.Every; e != 0 && e < time.Minute {
		pb.bad("audit.every", "%v is below the minimum of 1m (0: only at start)", e)
	}
}

// validateWatch checks watched brokers.
func (c *Config) validateWatch(pb *problems) {
	w := c.Watch
	if w.Interval < time.Second {
		pb.bad("watch.interval", "%v is below the minimum of 1s", w.Interval)
	}
	if w.Timeout < 100*time.Millisecond || w.Timeout > w.Interval {
		pb.bad("watch.timeout", "%v is outside 100ms..watch.interval (%v)", w.Timeout, w.Interval)
	}
	if w.Latency < 0 {
		pb.bad("watch.latency", "%v is negative", w.Latency)
	}
	names := map[string]bool{}
	for i, t := range w.Targets {
		key := fmt.Sprintf("watch.targets[%d]", i)
		u, err := url.Parse(t.URL)
		if err != nil || u.Host == "" || !slices.Contains([]string{"mqtt", "mqtts", "tcp", "ssl", "tls", "ws", "wss"}, u.Scheme) {
			pb.bad(key+".url", "%q is not an mqtt://, mqtts://, ws:// or wss:// URL", t.URL)
		} else if u.User != nil {
			// The URL is shown in the UI, the API and the logs.
			pb.bad(key+".url", "%q holds credentials; give them as username and password_env", u.Redacted())
		}
		name := t.Name
		if name == "" {
			name = t.URL
		}
		if names[name] {
			pb.bad(key+".name", "%q is used twice", name)
		}
		names[name] = true
		if t.PasswordEnv != "" && t.Username == "" {
			pb.bad(key+".password_env", "is set without a username")
		}
	}
}

// validateNotify checks notifications.
func (c *Config) validateNotify(pb *problems) {
	for _, h := range c.Notify.PushServices {
		if !validHostPattern(h) {
			pb.bad("notify.push_services", "%q is not a host name (fcm.googleapis.com), a wildcard (*.notify.windows.com) or an IP address; no scheme, port or path", h)
		}
	}
	for _, p := range c.Notify.AllowTargets {
		if _, err := parsePrefix(p); err != nil {
			pb.bad("notify.allow_targets", "%q is neither an IP address nor a CIDR (for example 127.0.0.1 or 127.0.0.0/8)", p)
		}
	}
}

// validHostPattern reports whether s is a DNS name, "*." and a DNS name,
// or an IP address.
func validHostPattern(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return !strings.Contains(s, "%")
	}
	name := strings.TrimPrefix(s, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func checkListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (for example 127.0.0.1:1883, or :0 for a free port)", addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("%q: host must be an IP address, localhost or empty (all interfaces)", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be 0..65535", addr)
	}
	return nil
}

// PlanFor returns the plan of a site (free unless sites.<site>.plan says
// otherwise), with unset fields taken from the free plan and then from
// built-in defaults.
func (c *Config) PlanFor(site string) (string, Plan) {
	name := "free"
	if sc, ok := c.Sites[site]; ok && sc.Plan != "" {
		name = sc.Plan
	}
	return c.PlanNamed(name)
}

// PlanNamed returns a plan with what it leaves unset taken from the free
// plan (and retention.max_clips).
func (c *Config) PlanNamed(name string) (string, Plan) {
	p := c.Plans[name]
	base := Plan{MaxClips: c.Retention.MaxClips, Width: 640, Height: 480, FPS: 10, Quality: 60}
	if free, ok := c.Plans["free"]; ok && name != "free" {
		base = free.fill(base)
	}
	return name, p.fill(base)
}

func (p Plan) fill(d Plan) Plan {
	if p.MaxClips == 0 {
		p.MaxClips = d.MaxClips
	}
	if p.Width == 0 {
		p.Width = d.Width
	}
	if p.Height == 0 {
		p.Height = d.Height
	}
	if p.FPS == 0 {
		p.FPS = d.FPS
	}
	if p.Quality == 0 {
		p.Quality = d.Quality
	}
	return p
}
