package conf

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/vigilhq/vigil"
)

// Validate checks every key and returns all problems at once, each naming
// the key, what it holds and what is allowed.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if c.Data.Dir == "" {
		bad("data.dir", "must not be empty")
	}

	checkAddr := func(key, addr string, optional bool) {
		if addr == "" {
			if !optional {
				bad(key, "must not be empty")
			}
			return
		}
		if err := checkListenAddr(addr); err != nil {
			bad(key, "%v", err)
		}
	}
	checkAddr("mqtt.listen", c.MQTT.Listen, true)
	checkAddr("mqtt.ws_listen", c.MQTT.WSListen, true)
	checkAddr("mqtt.tls_listen", c.MQTT.TLSListen, true)
	checkAddr("http.listen", c.HTTP.Listen, false)
	if c.MQTT.Listen == "" && c.MQTT.WSListen == "" && c.MQTT.TLSListen == "" {
		bad("mqtt.listen", "at least one of mqtt.listen, mqtt.ws_listen, mqtt.tls_listen must be set")
	}
	if c.MQTT.TLSListen != "" && (c.MQTT.TLSCert == "" || c.MQTT.TLSKey == "") {
		bad("mqtt.tls_listen", "needs mqtt.tls_cert and mqtt.tls_key")
	}
	switch c.MQTT.Anonymous {
	case AnonymousLoopback, AnonymousNever:
	default:
		bad("mqtt.anonymous", "%q is not one of %s, %s", c.MQTT.Anonymous, AnonymousLoopback, AnonymousNever)
	}
	if c.MQTT.MaxPacketSize < 1024 || c.MQTT.MaxPacketSize > 256<<20 {
		bad("mqtt.max_packet_size", "%d is outside 1024..268435456 bytes", c.MQTT.MaxPacketSize)
	}
	if c.MQTT.SysInterval < time.Second {
		bad("mqtt.sys_interval", "%v is below the minimum of 1s", c.MQTT.SysInterval)
	}

	if c.Auth.BcryptCost < 4 || c.Auth.BcryptCost > 16 {
		bad("auth.bcrypt_cost", "%d is outside 4..16", c.Auth.BcryptCost)
	}

	t := c.Telemetry
	if t.Retention < time.Hour {
		bad("telemetry.retention", "%v is below the minimum of 1h", t.Retention)
	}
	if t.MaxPayload < 64 || t.MaxPayload > c.MQTT.MaxPacketSize {
		bad("telemetry.max_payload", "%d is outside 64..mqtt.max_packet_size (%d)", t.MaxPayload, c.MQTT.MaxPacketSize)
	}
	if t.QueueSize < 1 {
		bad("telemetry.queue_size", "%d must be at least 1", t.QueueSize)
	}
	if t.BatchSize < 1 || t.BatchSize > 100000 {
		bad("telemetry.batch_size", "%d is outside 1..100000", t.BatchSize)
	}
	if t.FlushInterval < time.Millisecond || t.FlushInterval > time.Minute {
		bad("telemetry.flush_interval", "%v is outside 1ms..1m", t.FlushInterval)
	}
	if t.OfflineAfter < 0 {
		bad("telemetry.offline_after", "%v must not be negative (0 disables)", t.OfflineAfter)
	}
	if t.LegacySite == "" || !vigil.ValidName(t.LegacySite) {
		bad("telemetry.legacy_site", "%q must be 1-64 characters of letters, digits, '-', '_' or '.'", t.LegacySite)
	}
	if _, err := time.LoadLocation(t.LegacyTimezone); err != nil {
		bad("telemetry.legacy_timezone", "%q is not a time zone (use Local, UTC or an IANA name like Asia/Seoul)", t.LegacyTimezone)
	}
	if t.LogInterval < time.Second {
		bad("telemetry.log_interval", "%v is below the minimum of 1s", t.LogInterval)
	}

	if c.Demo.Devices < 1 || c.Demo.Devices > 1000 {
		bad("demo.devices", "%d is outside 1..1000", c.Demo.Devices)
	}
	if c.Demo.Period < 100*time.Millisecond {
		bad("demo.period", "%v is below the minimum of 100ms", c.Demo.Period)
	}
	return errors.Join(errs...)
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
