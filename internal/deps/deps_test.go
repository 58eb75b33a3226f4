// Package deps_test holds the rules of which package may depend on
// which, in the style of tailscale's deptest: a package that grows an
// import it should not have fails here, not in a review.
package deps_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/vigilhq/vigil/"

// pkg is what `go list -json` says of a package.
type pkg struct {
	ImportPath string
	Imports    []string // direct
	Deps       []string // all, transitively
}

func list(t *testing.T, path string) pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", mod+path).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", path, err)
	}
	var p pkg
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPackagesDependOnlyOnWhatTheyMay(t *testing.T) {
	for _, r := range []struct {
		pkg    string
		direct bool     // only direct imports count
		not    []string // import paths, or prefixes ending in "/"
		why    string
	}{
		{"internal/agent", false, []string{mod + "internal/sim", mod + "internal/web", mod + "internal/httpapi", mod + "internal/app",
			mod + "internal/store", mod + "internal/coord", "modernc.org/sqlite", "github.com/mochi-mqtt/", "github.com/chromedp/"},
			"an agent is a small process (and image) that receives video: no simulator, UI, database or broker"},
		{"internal/media", false, []string{mod + "internal/", "github.com/eclipse/paho.golang/"},
			"media is the video leaf: RTP, segments and clips, knowing nothing of MQTT or Vigil's other parts"},
		{"internal/ingest", false, []string{mod + "internal/"}, "ingest is the wire vocabulary both ends share"},
		{"internal/telemetry", false, []string{mod + "internal/broker", mod + "internal/store", "github.com/mochi-mqtt/"},
			"the pipeline takes messages from any broker and stores through an interface"},
		{"internal/store", true, []string{"net/http", mod + "internal/httpapi", mod + "internal/broker"},
			"the store speaks SQL, not HTTP or MQTT"},
		{"internal/alert", false, []string{mod + "internal/"}, "alerts are a leaf: every source imports it"},
		{"internal/agentrt", false, []string{mod + "internal/coord", mod + "internal/app", mod + "internal/store", mod + "internal/broker"},
			"runtimes start and stop agents; what they do is the coordinator's business"},
		{"internal/coord", false, []string{mod + "internal/app", mod + "internal/httpapi", mod + "internal/store", mod + "internal/broker"},
			"the coordinator reaches the broker and the database through its own interfaces (unit-tested with in-memory ones)"},
		{"internal/detect", false, []string{mod + "internal/store", mod + "internal/broker", mod + "internal/coord"},
			"detection never waits for storage and knows nothing of who records"},
	} {
		p := list(t, r.pkg)
		deps := p.Deps
		if r.direct {
			deps = p.Imports
		}
		for _, d := range deps {
			for _, n := range r.not {
				if d == n || (strings.HasSuffix(n, "/") && strings.HasPrefix(d, n)) {
					t.Errorf("%s depends on %s: %s", r.pkg, d, r.why)
				}
			}
		}
	}
}
