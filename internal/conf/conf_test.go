package conf

import (
	"net/netip"
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
	cfg.Watch.Targets = []WatchTarget{{URL: "mqtt://ops:hunter2@broker.lan:1883"}} // the UI and logs show the URL
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config validated")
	}
	for _, key := range []string{"http.listen", "mqtt.anonymous", "mqtt.tls_listen: needs", "telemetry.legacy_site",
		"watch.targets[0].url: \"mqtt://ops:xxxxx@broker.lan:1883\" holds credentials"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not mention %s:\n%v", key, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the error shows the password: %v", err)
	}
}

func TestBlockDefaults(t *testing.T) {
	m := New().MQTT
	if m.BlockAuthFailures != 10 || m.BlockWindow != time.Minute || m.BlockFloodMessages != 1000 || m.BlockDuration != 10*time.Minute {
		t.Errorf("block defaults: %d failures in %v, %d msg/s, %v", m.BlockAuthFailures, m.BlockWindow, m.BlockFloodMessages, m.BlockDuration)
	}
	got := m.BlockExemptPrefixes()
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("exempt = %v, want %v", got, want)
	}
}

func TestBlockExemptAcceptsAddressesAndCIDRs(t *testing.T) {
	m := New().MQTT
	m.BlockExempt = []string{"192.168.1.7", "10.0.0.1/8", "::ffff:10.1.0.0/112", "2001:db8::/32"}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.168.1.7/32"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("2001:db8::/32"),
	}
	if got := m.BlockExemptPrefixes(); !reflect.DeepEqual(got, want) {
		t.Errorf("exempt = %v, want %v", got, want)
	}
}

func TestValidateRejectsBadBlockKeys(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*MQTT)
		want   string
	}{
		{"negative failures", func(m *MQTT) { m.BlockAuthFailures = -1 }, "mqtt.block_auth_failures: -1 is outside 0..100000"},
		{"a window below a second", func(m *MQTT) { m.BlockWindow = 500 * time.Millisecond }, "mqtt.block_window: 500ms is outside 1s..24h"},
		{"a window over a day", func(m *MQTT) { m.BlockWindow = 25 * time.Hour }, "mqtt.block_window: 25h0m0s is outside 1s..24h"},
		{"a negative flood rate", func(m *MQTT) { m.BlockFloodMessages = -5 }, "mqtt.block_flood_messages: -5 is outside 0..10000000"},
		{"a zero duration", func(m *MQTT) { m.BlockDuration = 0 }, "mqtt.block_duration: 0s is outside 1s..8760h"},
		{"an exempt entry that is no address", func(m *MQTT) { m.BlockExempt = []string{"127.0.0.1", "localhost"} }, `mqtt.block_exempt: "localhost" is neither an IP address nor a CIDR`},
		{"a bad CIDR", func(m *MQTT) { m.BlockExempt = []string{"10.0.0.0/33"} }, `mqtt.block_exempt: "10.0.0.0/33"`},
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
	t.Run("zero turns either action off", func(t *testing.T) {
		cfg := New()
		cfg.MQTT.BlockAuthFailures, cfg.MQTT.BlockFloodMessages, cfg.MQTT.BlockExempt = 0, 0, nil
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBlockKeysFromFileAndEnvironment(t *testing.T) {
	p := writeConfig(t, "mqtt:\n  block_auth_failures: 5\n  block_window: 30s\n  block_exempt: [10.0.0.0/8]\n")
	cfg, err := Load(p, []string{"VIGIL_MQTT_BLOCK_DURATION=1h", "VIGIL_MQTT_BLOCK_FLOOD_MESSAGES=0", "VIGIL_MQTT_BLOCK_EXEMPT=192.168.0.0/16, ::1"})
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.MQTT
	if m.BlockAuthFailures != 5 || m.BlockWindow != 30*time.Second || m.BlockDuration != time.Hour || m.BlockFloodMessages != 0 {
		t.Errorf("loaded %d failures in %v, %d msg/s, %v", m.BlockAuthFailures, m.BlockWindow, m.BlockFloodMessages, m.BlockDuration)
	}
	if !reflect.DeepEqual(m.BlockExempt, []string{"192.168.0.0/16", "::1"}) {
		t.Errorf("exempt = %q, want the environment's", m.BlockExempt)
	}
	if _, err := Load(writeConfig(t, "mqtt:\n  block_duraton: 1h\n"), nil); err == nil || !strings.Contains(err.Error(), `did you mean "mqtt.block_duration"`) {
		t.Errorf("a misspelt key: %v", err)
	}
}

func TestNotifyKeys(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*Notify)
		want   string
	}{
		{"a push service with a scheme", func(n *Notify) { n.PushServices = []string{"https://fcm.googleapis.com"} }, `notify.push_services: "https://fcm.googleapis.com" is not a host name`},
		{"a push service with a port", func(n *Notify) { n.PushServices = []string{"fcm.googleapis.com:443"} }, `notify.push_services: "fcm.googleapis.com:443"`},
		{"a push service with a path", func(n *Notify) { n.PushServices = []string{"fcm.googleapis.com/fcm"} }, `notify.push_services: "fcm.googleapis.com/fcm"`},
		{"a bare wildcard", func(n *Notify) { n.PushServices = []string{"*"} }, `notify.push_services: "*"`},
		{"a wildcard inside a name", func(n *Notify) { n.PushServices = []string{"push.*.com"} }, `notify.push_services: "push.*.com"`},
		{"an allowed target that is a name", func(n *Notify) { n.AllowTargets = []string{"localhost"} }, `notify.allow_targets: "localhost" is neither an IP address nor a CIDR`},
		{"an allowed target that is a bad CIDR", func(n *Notify) { n.AllowTargets = []string{"127.0.0.0/40"} }, `notify.allow_targets: "127.0.0.0/40"`},
	} {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			cfg := New()
			tt.mutate(&cfg.Notify)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	t.Run("names, wildcards, addresses and CIDRs are taken from the file and the environment", func(t *testing.T) {
		p := writeConfig(t, "notify:\n  push_services: [push.example.net, \"*.push.example.org\", 10.0.0.5]\n")
		cfg, err := Load(p, []string{"VIGIL_NOTIFY_ALLOW_TARGETS=127.0.0.1, ::1, 169.254.0.0/16"})
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("169.254.0.0/16")}
		if got := cfg.Notify.AllowTargetPrefixes(); !reflect.DeepEqual(got, want) {
			t.Errorf("allow_targets = %v, want %v", got, want)
		}
		if got := cfg.Notify.PushServices; !reflect.DeepEqual(got, []string{"push.example.net", "*.push.example.org", "10.0.0.5"}) {
			t.Errorf("push_services = %q", got)
		}
	})
}

func TestDockerLimits(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*Agents)
		want   string
	}{
		{"a memory limit below 16 MiB is refused", func(a *Agents) { a.DockerMemory = 1 << 20 }, "agents.docker_memory: 1048576 is outside"},
		{"a negative memory limit is refused", func(a *Agents) { a.DockerMemory = -1 }, "agents.docker_memory: -1 is outside"},
		{"a pids limit below 16 is refused", func(a *Agents) { a.DockerPids = 4 }, "agents.docker_pids: 4 is outside"},
		{"no limits at all is allowed", func(a *Agents) { a.DockerMemory, a.DockerPids = 0, 0 }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := New()
			tt.mutate(&cfg.Agents)
			err := cfg.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestExternalBrokerKeys(t *testing.T) {
	path := writeConfig(t, "mqtt:\n  mode: external\n  urls: [mqtt://broker.lan:1883, mqtts://backup.lan:8883]\n  username: vigil\n  password_env: BROKER_PW\n")
	cfg, err := Load(path, []string{"VIGIL_MQTT_SHARE_GROUP=site-a", "VIGIL_MQTT_LISTEN="})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("external mode without embedded listeners: %v", err)
	}
	if !cfg.MQTT.External() || len(cfg.MQTT.URLs) != 2 || cfg.MQTT.ShareGroup != "site-a" {
		t.Errorf("mqtt = %+v", cfg.MQTT)
	}
	for _, c := range []struct {
		yaml, want string
	}{
		{"mode: cloud", `mqtt.mode: "cloud" is not one of embedded, external`},
		{"mode: external", "mqtt.urls: mqtt.mode external needs the broker's URLs"},
		{"mode: external\n  urls: [http://broker.lan]", `mqtt.urls: a URL is not a broker URL`},
		{"mode: external\n  urls: [mqtt://vigil:s3cret@broker.lan]", `mqtt.urls: mqtt://vigil:xxxxx@broker.lan holds a login`},
		{"mode: external\n  urls: [mqtt://b]\n  agent_username: vigil-agent", "mqtt.agent_username: needs mqtt.agent_password_env"},
		{"mode: external\n  urls: [mqtt://b]\n  password_env: A\n  password_file: /b", "mqtt.password_env and mqtt.password_file are both set"},
		{"mode: external\n  urls: [mqtt://b]\n  client_cert: /c.pem", "mqtt.client_cert and mqtt.client_key go together"},
		{"mode: external\n  urls: [mqtt://b]\n  share_group: a/b", `mqtt.share_group: "a/b" is not a shared subscription group`},
	} {
		cfg, err := Load(writeConfig(t, "mqtt:\n  "+c.yaml+"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestSecretsComeFromTheEnvironmentOrAFile(t *testing.T) {
	env := func(k string) (string, bool) { v, ok := map[string]string{"PW": "s3cret"}[k]; return v, ok }
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from-file\r\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env, file, want, err string
	}{
		{"PW", "", "s3cret", ""},
		{"", file, "from-file", ""},
		{"", "", "", ""},
		{"NOPE", "", "", "mqtt.password_env: NOPE is not set"},
		{"PW", file, "", "both set"},
		{"", "/nonexistent/pw", "", "mqtt.password_file"},
	} {
		got, err := Secret("mqtt.password", c.env, c.file, env)
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("Secret(%q, %q) = %q, %v; want %q, %q", c.env, c.file, got, err, c.want, c.err)
		}
	}
}
