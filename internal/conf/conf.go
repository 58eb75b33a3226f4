// Package conf holds Vigil's configuration: the defaults, strict YAML
// decoding of vigil.yaml, VIGIL_<SECTION>_<KEY> environment overrides and
// validation with messages that name the wrong key.
package conf

import (
	"time"
)

// Config is the whole of Vigil's configuration. Every field has a default set
// by New; the annotated vigil.yaml at the repository root documents each key.
type Config struct {
	Log       Log       `yaml:"log"`
	Data      Data      `yaml:"data"`
	MQTT      MQTT      `yaml:"mqtt"`
	HTTP      HTTP      `yaml:"http"`
	Auth      Auth      `yaml:"auth"`
	Telemetry Telemetry `yaml:"telemetry"`
	Demo      Demo      `yaml:"demo"`
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

// MQTT configures the embedded broker.
type MQTT struct {
	Listen        string        `yaml:"listen"`
	WSListen      string        `yaml:"ws_listen"`
	TLSListen     string        `yaml:"tls_listen"`
	TLSCert       string        `yaml:"tls_cert"`
	TLSKey        string        `yaml:"tls_key"`
	Anonymous     string        `yaml:"anonymous"`
	MaxPacketSize int           `yaml:"max_packet_size"`
	SysInterval   time.Duration `yaml:"sys_interval"`
	Persistence   bool          `yaml:"persistence"`
}

// Anonymous access policies for the MQTT listeners.
const (
	// AnonymousLoopback allows anonymous clients on listeners bound to a
	// loopback address only (Mosquitto 2's local-only mode).
	AnonymousLoopback = "loopback"
	// AnonymousNever requires every client to authenticate.
	AnonymousNever = "never"
)

// HTTP configures the HTTP server (API, health, metrics).
type HTTP struct {
	Listen string `yaml:"listen"`
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

// Demo configures the built-in demo fleet started by `vigil up --demo`.
type Demo struct {
	Enabled bool          `yaml:"enabled"`
	Devices int           `yaml:"devices"`
	Period  time.Duration `yaml:"period"`
}

// New returns a Config with every default set. The shipped vigil.yaml must
// decode to exactly this value (a test checks it).
func New() *Config {
	return &Config{
		Log:  Log{Level: "info", Format: "text"},
		Data: Data{Dir: "./vigil-data"},
		MQTT: MQTT{
			Listen:        "127.0.0.1:1883",
			WSListen:      "127.0.0.1:9001",
			Anonymous:     AnonymousLoopback,
			MaxPacketSize: 1 << 20,
			SysInterval:   10 * time.Second,
			Persistence:   true,
		},
		HTTP: HTTP{Listen: "127.0.0.1:8080"},
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
		Demo: Demo{Enabled: false, Devices: 6, Period: 2 * time.Second},
	}
}
