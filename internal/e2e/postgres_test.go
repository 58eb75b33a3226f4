package e2e_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// vigil up on PostgreSQL (database.url): readings, devices, summaries,
// an intrusion event and its camera's stream, all in PostgreSQL, and still
// there after a restart; no SQLite file is made.
func TestVigilUpOnPostgreSQL(t *testing.T) {
	pg := testpeer.NeedPostgres(t)
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Database.URL = pg.NewDatabase(t)
	})
	readings := func(ta *testApp) int {
		var rs []struct{ Value float64 }
		ta.api(t, "GET", "/api/v1/devices/temp1/telemetry", "admin", adminPassword, &rs)
		return len(rs)
	}
	for i := range 3 {
		must(t, ta.Broker.Publish("vigil/shop/temp1/telemetry", []byte(`{"type":"temperature","units":"Celsius","value":2`+string(rune('0'+i))+`}`), false, 1))
	}
	testkit.WaitFor(t, 10*time.Second, "three readings", func() bool { return readings(ta) == 3 })
	var buckets []struct{ Count int }
	if code := ta.api(t, "GET", "/api/v1/devices/temp1/telemetry/summary?since=1h", "admin", adminPassword, &buckets); code != 200 || len(buckets) == 0 {
		t.Errorf("summary: %d %+v", code, buckets)
	}

	cam := newManualCamera(t, ta, "shop", "cam1")
	testkit.WaitFor(t, 20*time.Second, "an agent", func() bool { return liveAgents(ta.view(t)) == 1 && ta.view(t).Agents[0].Status == "ready" })
	ta.detect(t, "shop", "cam1")
	cam.command(t)
	events := func(ta *testApp) int {
		var evs []struct{ ID string }
		ta.api(t, "GET", "/api/v1/events?site=shop", "admin", adminPassword, &evs)
		return len(evs)
	}
	testkit.WaitFor(t, 10*time.Second, "the event", func() bool { return events(ta) == 1 })

	ta.Close()
	ta = openApp(t, ta.cfg, adminPassword)
	if n, m := readings(ta), events(ta); n != 3 || m != 1 {
		t.Errorf("after a restart: %d readings and %d events, want 3 and 1", n, m)
	}
	if _, err := os.Stat(filepath.Join(ta.cfg.Data.Dir, "vigil.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a SQLite database was made beside PostgreSQL: %v", err)
	}
}

// GET /api/v1/cluster lists the nodes that share the database: two vigil
// up on one PostgreSQL database both appear, up, each with its own id and
// address; a browser signed in on one is signed in on the other (session
// and CSRF token); a node keeps its id across a restart.
func TestTheClusterListsTheNodesSharingTheDatabase(t *testing.T) {
	pg := testpeer.NeedPostgres(t)
	url := pg.NewDatabase(t)
	a := startApp(t, func(c *conf.Config) { c.Database.URL = url })
	b := startApp(t, func(c *conf.Config) { c.Database.URL = url })
	type node struct {
		ID, HTTP    string
		Up          bool
		Coordinator bool
	}
	nodes := func(ta *testApp) []node {
		var out struct{ Nodes []node }
		ta.api(t, "GET", "/api/v1/cluster", "admin", adminPassword, &out)
		return out.Nodes
	}
	ns := nodes(b)
	if len(ns) != 2 || ns[0].ID == ns[1].ID || !ns[0].Up || !ns[1].Up {
		t.Fatalf("nodes %+v, want two, up", ns)
	}
	var idA string
	for _, n := range ns {
		if n.HTTP == "http://"+a.HTTP.Addr().String() {
			idA = n.ID
		}
	}
	if idA == "" {
		t.Fatalf("node a (%s) not listed: %+v", a.HTTP.Addr(), ns)
	}
	// A browser signed in on one node is signed in on the other: the
	// session and its CSRF token are in the shared database.
	br := newBrowser(t, a)
	if code := br.login("admin", adminPassword); code != 200 {
		t.Fatalf("login on node a: %d", code)
	}
	br.base = "http://" + b.HTTP.Addr().String() // the same cookie jar: cookies do not tell ports apart
	if code, _, _ := br.do("GET", "/api/v1/me", "", nil, nil); code != 200 {
		t.Errorf("node b does not know node a's session: %d", code)
	}
	if code, _, _ := br.do("POST", "/api/v1/sites/home/disarm", "", nil, map[string]string{"X-CSRF-Token": br.csrf}); code != 200 {
		t.Errorf("node b refuses node a's CSRF token: %d", code)
	}
	if code, _, _ := br.do("POST", "/api/v1/sites/home/arm", "", nil, map[string]string{"X-CSRF-Token": "forged"}); code != 403 {
		t.Errorf("node b takes a forged CSRF token: %d", code)
	}

	a.Close()
	a = openApp(t, a.cfg, adminPassword)
	ns = nodes(a)
	found := false
	for _, n := range ns {
		found = found || n.ID == idA && n.HTTP == "http://"+a.HTTP.Addr().String()
	}
	if len(ns) != 2 || !found {
		t.Errorf("after a restart node a is not itself again: %+v (id %s)", ns, idA)
	}
}
