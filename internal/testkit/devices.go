package testkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// DeviceFixture is a file of internal/e2e/testdata/devices: what a
// project publishes (discovery configs and states, transcribed from its
// source; each file says where from) and what Vigil must make of it.
type DeviceFixture struct {
	Messages []FixtureMessage `yaml:"messages"`
	Expect   []struct {
		UniqueID    string   `yaml:"unique_id"`
		Component   string   `yaml:"component"`
		DeviceClass string   `yaml:"device_class"`
		Name        string   `yaml:"name"`
		Units       string   `yaml:"units"`
		Value       *float64 `yaml:"value"` // nil: Home Assistant shows no value
		Device      struct {
			Name         string `yaml:"name"`
			Model        string `yaml:"model"`
			Manufacturer string `yaml:"manufacturer"`
		} `yaml:"device"`
	} `yaml:"expect"`
}

// FixtureMessage is one MQTT message of a fixture.
type FixtureMessage struct {
	Topic   string `yaml:"topic"`
	Retain  bool   `yaml:"retain"`
	Payload string `yaml:"payload"`
}

// DeviceFixtures reads the fixtures in dir, by family (file name).
func DeviceFixtures(t testing.TB, dir string) map[string]DeviceFixture {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) < 4 {
		t.Fatalf("device fixtures in %s: %v", dir, files)
	}
	out := map[string]DeviceFixture{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var fx DeviceFixture
		if err := yaml.Unmarshal(b, &fx); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".yaml")] = fx
	}
	return out
}
