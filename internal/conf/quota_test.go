package conf

import (
	"strings"
	"testing"
)

func TestQuotaDefaults(t *testing.T) {
	m := New().MQTT
	if m.MaxRetainedMessages != 100 || m.MaxRetainedBytes != 1<<20 || m.MaxSubscriptions != 1000 {
		t.Errorf("per-login quota %d messages, %d bytes, %d subscriptions", m.MaxRetainedMessages, m.MaxRetainedBytes, m.MaxSubscriptions)
	}
	// A fleet of 10,000 simulated devices, each retaining a status and
	// subscribed to its cmd topic, fits twice over.
	if m.AnonymousMaxRetainedMessages != 20000 || m.AnonymousMaxRetainedBytes != 16<<20 || m.AnonymousMaxSubscriptions != 20000 {
		t.Errorf("anonymous quota %d messages, %d bytes, %d subscriptions", m.AnonymousMaxRetainedMessages, m.AnonymousMaxRetainedBytes, m.AnonymousMaxSubscriptions)
	}
}

func TestValidateRejectsBadQuotas(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*MQTT)
		want   string
	}{
		{"no retained messages at all", func(m *MQTT) { m.MaxRetainedMessages = 0 }, "mqtt.max_retained_messages: 0 is outside 1..1000000 messages"},
		{"a negative count", func(m *MQTT) { m.AnonymousMaxRetainedMessages = -1 }, "mqtt.anonymous_max_retained_messages: -1 is outside 1..1000000 messages"},
		{"fewer bytes than a small message", func(m *MQTT) { m.MaxRetainedBytes = 100 }, "mqtt.max_retained_bytes: 100 is outside 1024..1073741824 bytes"},
		{"more than a gigabyte", func(m *MQTT) { m.AnonymousMaxRetainedBytes = 2 << 30 }, "mqtt.anonymous_max_retained_bytes: 2147483648 is outside 1024..1073741824 bytes"},
		{"no subscriptions", func(m *MQTT) { m.MaxSubscriptions = 0 }, "mqtt.max_subscriptions: 0 is outside 1..1000000 subscriptions"},
		{"no anonymous subscriptions", func(m *MQTT) { m.AnonymousMaxSubscriptions = 0 }, "mqtt.anonymous_max_subscriptions: 0 is outside 1..1000000 subscriptions"},
		{"more subscriptions than a broker should hold", func(m *MQTT) { m.AnonymousMaxSubscriptions = 2000000 }, "mqtt.anonymous_max_subscriptions: 2000000 is outside 1..1000000 subscriptions"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := New()
			tt.mutate(&cfg.MQTT)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestQuotaKeysFromFileAndEnvironment(t *testing.T) {
	p := writeConfig(t, "mqtt:\n  max_retained_messages: 10\n  max_retained_bytes: 65536\n  anonymous_max_subscriptions: 30000\n")
	cfg, err := Load(p, []string{"VIGIL_MQTT_MAX_SUBSCRIPTIONS=20", "VIGIL_MQTT_ANONYMOUS_MAX_RETAINED_MESSAGES=50"})
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.MQTT
	if m.MaxRetainedMessages != 10 || m.MaxRetainedBytes != 65536 || m.MaxSubscriptions != 20 || m.AnonymousMaxRetainedMessages != 50 ||
		m.AnonymousMaxSubscriptions != 30000 {
		t.Errorf("loaded %d messages, %d bytes, %d subscriptions, %d anonymous messages, %d anonymous subscriptions",
			m.MaxRetainedMessages, m.MaxRetainedBytes, m.MaxSubscriptions, m.AnonymousMaxRetainedMessages, m.AnonymousMaxSubscriptions)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
