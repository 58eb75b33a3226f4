package conf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestShippedConfigIsTheDefaults(t *testing.T) {
	cfg, err := Load("../../vigil.yaml", nil)
	if err != nil {
		t.Fatalf("shipped vigil.yaml does not load: %v", err)
	}
	if !reflect.DeepEqual(cfg, New()) {
		t.Fatalf("shipped vigil.yaml differs from New():\nfile: %+v\nnew:  %+v", cfg, New())
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../vigil.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range EnvKeys() {
		rest := strings.ToLower(strings.TrimPrefix(env, EnvPrefix))
		_, key, _ := strings.Cut(rest, "_")
		if !strings.Contains(string(data), "\n  "+key+":") {
			t.Errorf("vigil.yaml does not document the key behind %s", env)
		}
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"an unknown key, naming it and suggesting the near one", "mqtt:\n  lisen: 127.0.0.1:1\n",
			[]string{`line 2`, `unknown key "mqtt.lisen"`, `did you mean "mqtt.listen"`}},
		{"an unknown section", "mqqt:\n  listen: x\n", []string{`unknown key "mqqt"`, "allowed at the top level"}},
		{"a wrongly typed value", "telemetry:\n  batch_size: lots\n", []string{"line 2", "lots"}},
		{"a bad duration", "telemetry:\n  retention: forever\n", []string{"forever"}},
		{"a scalar where a section belongs", "mqtt: 5\n", []string{`"mqtt" must be a mapping`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.body), nil)
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPrecedenceFileThenEnvironment(t *testing.T) {
	p := writeConfig(t, "http:\n  listen: 127.0.0.1:9999\ntelemetry:\n  retention: 48h\n")
	cfg, err := Load(p, []string{
		"VIGIL_HTTP_LISTEN=0.0.0.0:8081",
		"VIGIL_MQTT_WS_LISTEN=",
		"VIGIL_DEMO_ENABLED=true",
		"VIGIL_ADMIN_PASSWORD=not-a-key",
		"HOME=/root",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "0.0.0.0:8081" {
		t.Errorf("http.listen = %q, want the environment's value", cfg.HTTP.Listen)
	}
	if cfg.Telemetry.Retention != 48*time.Hour {
		t.Errorf("telemetry.retention = %v, want the file's 48h", cfg.Telemetry.Retention)
	}
	if cfg.MQTT.WSListen != "" || !cfg.Demo.Enabled {
		t.Errorf("env did not apply: ws_listen=%q demo=%v", cfg.MQTT.WSListen, cfg.Demo.Enabled)
	}
}

func TestEnvironmentRejects(t *testing.T) {
	for _, tt := range []struct{ env, want string }{
		{"VIGIL_HTTP_LISTN=x", "VIGIL_HTTP_LISTN names no key"},
		{"VIGIL_NOPE_X=1", "names no config section"},
		{"VIGIL_DEMO_DEVICES=many", "want a whole number"},
		{"VIGIL_TELEMETRY_RETENTION=1 day", "want a duration"},
	} {
		t.Run(tt.env, func(t *testing.T) {
			_, err := Load("", []string{tt.env})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateNamesEveryWrongKey(t *testing.T) {
	cfg := New()
	cfg.HTTP.Listen = "8080"
	cfg.MQTT.Anonymous = "always"
	cfg.MQTT.TLSListen = "0.0.0.0:8883"
	cfg.Telemetry.LegacySite = "my site"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config validated")
	}
	for _, key := range []string{"http.listen", "mqtt.anonymous", "mqtt.tls_listen: needs", "telemetry.legacy_site"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not mention %s:\n%v", key, err)
		}
	}
}
