package sim

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testpeer"
)

func TestTheExampleScenarioLoads(t *testing.T) {
	sc, err := LoadScenario("../../examples/scenario.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Devices() != 38 || len(sc.Timeline) != 2 || sc.Fleets[1].Model.Kind != "sine" {
		t.Errorf("scenario = %+v", sc)
	}
	if sc.Fleets[0].Units != "Celsius" || sc.Fleets[0].Model.Min != 10 || sc.Fleets[0].Model.Max != 35 {
		t.Errorf("temperature fleet did not get the paper's defaults: %+v", sc.Fleets[0])
	}
}

func TestScenarioErrorsNameTheField(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"fleets:\n  - name: a\n    cout: 3\n", `unknown key "fleets.0.cout" (did you mean "fleets.0.count"?)`},
		{"fleets:\n  - {type: thermostat}\n", `type "thermostat" is not one of`},
		{"qos: 3\nfleets: [{}]\n", "qos: 3 is not 0, 1 or 2"},
		{"fleets: [{name: a}]\ntimeline: [{fleet: b, action: disconnect}]\n", `no fleet named "b"`},
		{"fleets: [{name: a}]\ntimeline: [{action: explode}]\n", `action "explode"`},
		{"brokers: [http://x]\nfleets: [{}]\n", `scheme "http"`},
	} {
		p := filepath.Join(t.TempDir(), "s.yaml")
		os.WriteFile(p, []byte(tt.yaml), 0o600)
		_, err := LoadScenario(p)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want it to contain %q", tt.yaml, err, tt.want)
		}
	}
}

func TestSeededMACsAreStableUniqueAndLocallyAdministered(t *testing.T) {
	a, b := newSeededMACs(7), newSeededMACs(7)
	seen := map[MAC]bool{}
	for i := range 10000 {
		m := a.take()
		if m != b.take() {
			t.Fatalf("MAC %d differs between two sources with the same seed", i)
		}
		if m[0]&0x02 == 0 || m[0]&0x01 != 0 {
			t.Fatalf("MAC %s is not locally administered unicast", m)
		}
		if seen[m] {
			t.Fatalf("MAC %s repeated", m)
		}
		seen[m] = true
	}
	if newSeededMACs(8).take() == newSeededMACs(7).take() {
		t.Error("different seeds gave the same first MAC")
	}
}

func TestHostMACsCountUpFromTheNIC(t *testing.T) {
	s, err := newHostMACs()
	if err != nil {
		t.Skipf("no NIC with a MAC here: %v", err)
	}
	base, _ := hostMAC()
	first, second := s.take(), s.take()
	if first != base {
		t.Errorf("first MAC %s is not the NIC's %s", first, base)
	}
	if second[5] != base[5]+1 && !(base[5] == 0xff && second[5] == 0) {
		t.Errorf("second MAC %s is not the NIC's plus one", second)
	}
}

// TestLegacyPayloadIsWhatThePapersScriptSends compares the legacy payload
// with Python's own json.dumps(..., indent=4) of the same values.
func TestLegacyPayloadIsWhatThePapersScriptSends(t *testing.T) {
	python := testpeer.Need(t, "python3")
	at := time.Date(2026, 11, 21, 9, 5, 3, 0, time.Local)
	for _, v := range []float64{23.45, 30.0, 10.1, 34.99, 12.5, -0.0001, 1e16} {
		script := `import json,sys
v=float(sys.argv[1])
sys.stdout.write(json.dumps({"sensor_id": "1", "type": "temperature", "timestamp": "21-11-2026 09:05:03", "value": v, "units": "Celsius"}, indent=4))`
		want, err := exec.Command(python, "-c", script, strings.TrimSpace(pyFloat(v))).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := LegacyPayload("1", "temperature", at, v, "Celsius"); string(got) != string(want) {
			t.Errorf("value %v:\ngot  %q\nwant %q", v, got, want)
		}
	}
	if got := pyString("né\"\x01😀"); got != `"n\u00e9\"\u0001\ud83d\ude00"` {
		t.Errorf("pyString = %s", got)
	}
}

func TestValueModels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	for _, typ := range Types {
		f := TypeDefaults(typ)
		g := newValueGen(f.Model, rng)
		for i := range 2000 {
			v := g.next(now.Add(time.Duration(i) * time.Minute))
			m := f.Model
			switch m.Kind {
			case "binary":
				if v != 0 && v != 1 {
					t.Fatalf("%s: %v is not 0 or 1", typ, v)
				}
			default:
				if v < m.Min-0.05*(m.Max-m.Min) || v > m.Max+0.05*(m.Max-m.Min) {
					t.Fatalf("%s: %v outside %v..%v", typ, v, m.Min, m.Max)
				}
				if r := round(v, m.Decimals); r != v {
					t.Fatalf("%s: %v has more than %d decimals", typ, v, m.Decimals)
				}
			}
		}
	}
	g := newValueGen(Model{Kind: "uniform", Min: 10, Max: 35, Decimals: 2}, rng)
	g.stick(now, time.Minute, 20)
	if g.next(now.Add(30*time.Second)) != 20 || g.next(now.Add(2*time.Minute)) == 20 {
		t.Error("a stuck value did not hold for its duration only")
	}
	g = newValueGen(Model{Kind: "uniform", Min: 10, Max: 35, Decimals: 2}, rng)
	g.spikeUntil = now.Add(time.Second)
	if v := g.next(now); v >= 10 && v <= 35 {
		t.Errorf("a spike %v stayed inside the range", v)
	}
}

// TestNativePayloadIsWhatThePipelineAccepts is the contract between the
// simulator and the telemetry pipeline.
func TestNativePayloadIsWhatThePipelineAccepts(t *testing.T) {
	at := time.Now().Truncate(time.Millisecond)
	payload := nativePayload(nil, "02aabbccddee", "humidity", at, 41.5, "%", 17)
	if !json.Valid(payload) {
		t.Fatalf("not JSON: %s", payload)
	}
	p := telemetry.Parser{MaxPayload: 1024, LegacySite: "x", LegacyTZ: time.UTC}
	ev, err := p.Parse(telemetryTopic("lab", "02aabbccddee"), payload, "02aabbccddee", at.Add(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := ev.Reading
	if ev.DeviceID != "02aabbccddee" || ev.Site != "lab" || ev.Type != "humidity" || r.Value != 41.5 || r.Units != "%" || *r.Seq != 17 || !r.Time.Equal(at) {
		t.Errorf("parsed %+v %+v", ev, r)
	}
	legacy := LegacyPayload("3", "temperature", at, 23.45, "Celsius")
	if ev, err := p.Parse(legacyTopic("temperature"), legacy, "c", at); err != nil || ev.DeviceID != "3" || ev.Reading.Value != 23.45 {
		t.Errorf("legacy payload: %+v, %v", ev, err)
	}
	if math.Abs(round(23.449999, 2)-23.45) > 1e-9 {
		t.Error("round")
	}
}
