package store

import (
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/cluster"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// A node records itself again and again as one row; the list says which
// nodes were heard from lately, and forgets those gone for a day.
func TestNodesAreListedUpOrDown(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Millisecond)
	save := func(n cluster.Node) {
		t.Helper()
		if err := s.SaveNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	save(cluster.Node{ID: "old", Name: "c", Started: t0.Add(-48 * time.Hour), LastSeen: t0.Add(-25 * time.Hour)})
	save(cluster.Node{ID: "n1", Name: "a", HTTP: "http://10.0.0.1:8080", Version: "v1", Started: t0.Add(-time.Hour), LastSeen: t0.Add(-time.Minute)})
	save(cluster.Node{ID: "n2", Name: "b", Started: t0, LastSeen: t0, Coordinator: true})
	save(cluster.Node{ID: "n1", Name: "a", HTTP: "http://10.0.0.1:8080", Version: "v1", Started: t0.Add(-time.Hour), LastSeen: t0.Add(-time.Second)})
	nodes, err := s.ListNodes(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].ID != "n1" || !nodes[0].Up || nodes[0].HTTP != "http://10.0.0.1:8080" || nodes[0].Coordinator ||
		nodes[1].ID != "n2" || !nodes[1].Coordinator || !nodes[1].LastSeen.Equal(t0) {
		t.Fatalf("nodes %+v", nodes)
	}
	nodes, _ = s.ListNodes(ctx, t0.Add(time.Minute))
	if nodes[0].Up || nodes[1].Up {
		t.Errorf("a minute without news, still up: %+v", nodes)
	}
}

// Two nodes on one PostgreSQL database, each with its copy of the devices:
// a device one of them stored is found by the other at once, a newer state
// written by one replaces the other's copy within Store.shared, and a node
// that never saw a device's meta or its newer status does not erase them
// when it writes the device.
func TestNodesSharingADatabaseSeeEachOthersDevices(t *testing.T) {
	if testPostgres == nil {
		t.Skip("PostgreSQL only (VIGIL_TEST_DATABASE=postgres)")
	}
	ctx := context.Background()
	dsn := testDSN(t)
	open := func() *Store {
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		s.shared = time.Millisecond // no waiting for the refresh in a test
		return s
	}
	a, b := open(), open()
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	if _, err := b.ListDevices(ctx, telemetry.DeviceFilter{}); err != nil { // b's copy: no devices
		t.Fatal(err)
	}
	cam := telemetry.Event{DeviceID: "cam1", Site: "home", Time: t0, Meta: &telemetry.Meta{Capabilities: []string{telemetry.CapCamera}}}
	if err := a.Apply(ctx, []telemetry.Event{cam, reading("cam1", t0.Add(time.Second), 1, 1)}); err != nil {
		t.Fatal(err)
	}
	d, err := b.GetDevice(ctx, "cam1")
	if err != nil || !d.Meta.Has(telemetry.CapCamera) {
		t.Fatalf("b: %+v %v, want a's camera", d, err)
	}
	if rs, err := b.ListReadings(ctx, telemetry.ReadingQuery{DeviceID: "cam1", Limit: 10}); err != nil || len(rs) != 1 {
		t.Fatalf("b's readings of cam1: %v %v", rs, err)
	}

	// b stores a newer reading, then its last will: a's copy follows.
	if err := b.Apply(ctx, []telemetry.Event{reading("cam1", t0.Add(2*time.Second), 2, 2),
		{DeviceID: "cam1", Site: "home", Time: t0.Add(3 * time.Second), Status: telemetry.StatusOffline}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	ds, err := a.ListDevices(ctx, telemetry.DeviceFilter{})
	if err != nil || len(ds) != 1 || *ds[0].LastValue != 2 || ds[0].Status != telemetry.StatusOffline {
		t.Fatalf("a's list after b's writes: %+v %v", ds, err)
	}

	// A plan set on one node reaches the other (read again every 2 s).
	if _, err := a.SetPlan(ctx, "home", "pro"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.SitePlan("home") != "pro" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := b.SitePlan("home"); got != "pro" {
		t.Errorf("b's plan for home: %q, want a's pro", got)
	}

	// A third node that knew nothing of cam1 stores an older reading of
	// it: the meta stays, and so do the newer status and last value.
	c := open()
	c.devs.loaded, c.devs.byID, c.devs.dirty, c.devs.refreshed = true, map[string]*device{}, map[string]bool{}, time.Now().Add(time.Hour)
	c.shared = time.Hour
	if err := c.Apply(ctx, []telemetry.Event{reading("cam1", t0.Add(1500*time.Millisecond), 9, 7)}); err != nil {
		t.Fatal(err)
	}
	// ... and a status from yet another one (no type, units or value).
	e := open()
	e.devs.loaded, e.devs.byID, e.devs.dirty, e.devs.refreshed = true, map[string]*device{}, map[string]bool{}, time.Now().Add(time.Hour)
	e.shared = time.Hour
	if err := e.Apply(ctx, []telemetry.Event{{DeviceID: "cam1", Site: "home", Time: t0.Add(time.Second), Status: telemetry.StatusOnline}}); err != nil {
		t.Fatal(err)
	}
	fresh := open()
	d, err = fresh.GetDevice(ctx, "cam1")
	if err != nil || !d.Meta.Has(telemetry.CapCamera) || d.Status != telemetry.StatusOffline || d.LastValue == nil || *d.LastValue != 2 ||
		d.Type != "temperature" || d.Units != "Celsius" {
		t.Errorf("after writes from nodes that did not know cam1: %+v %v", d, err)
	}
}
