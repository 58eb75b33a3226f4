package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testpeer"
	"github.com/vigilhq/vigil/internal/users"
)

// The store's tests run on SQLite, or on PostgreSQL when
// VIGIL_TEST_DATABASE=postgres (scripts/test.sh runs them both ways): a
// server of the tests' own, a database per test.
var testPostgres *testpeer.Postgres

func TestMain(m *testing.M) {
	if os.Getenv("VIGIL_TEST_DATABASE") == "postgres" {
		pg, err := testpeer.StartPostgres()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		testPostgres = pg
		code := m.Run()
		pg.Close()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testDSN returns where a test's database is: a new SQLite file, or a new
// PostgreSQL database.
func testDSN(t testing.TB) string {
	t.Helper()
	if testPostgres != nil {
		return testPostgres.NewDatabase(t)
	}
	return filepath.Join(t.TempDir(), "vigil.db")
}

// sqliteOnly skips a test of SQLite's own behaviour on PostgreSQL.
func sqliteOnly(t testing.TB) {
	t.Helper()
	if testPostgres != nil {
		t.Skip("SQLite only")
	}
}

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), testDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reading(id string, at time.Time, v float64, seq int64) telemetry.Event {
	return telemetry.Event{DeviceID: id, Site: "home", Type: "temperature", Time: at,
		Reading: &telemetry.Reading{Time: at, Received: at, Value: v, Units: "Celsius", Seq: &seq}}
}

func TestApplyRegistersDevicesAndKeepsEventOrder(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	err := s.Apply(ctx, []telemetry.Event{
		reading("a", t0, 20.5, 1),
		reading("b", t0, 30, 1),
		reading("a", t0.Add(time.Second), 21.25, 2),
		{DeviceID: "b", Site: "home", Time: t0.Add(2 * time.Second), Status: telemetry.StatusOffline},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.GetDevice(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != "online" || a.LastValue == nil || *a.LastValue != 21.25 || !a.LastSeen.Equal(t0.Add(time.Second)) || a.Type != "temperature" {
		t.Errorf("device a = %+v", a)
	}
	b, _ := s.GetDevice(ctx, "b")
	if b.Status != "offline" || !b.StatusSince.Equal(t0.Add(2*time.Second)) {
		t.Errorf("device b after its last will = %+v, want offline since t0+2s", b)
	}

	// A later reading brings b back online; its first_seen stays.
	if err := s.Apply(ctx, []telemetry.Event{reading("b", t0.Add(time.Minute), 31, 2)}); err != nil {
		t.Fatal(err)
	}
	b, _ = s.GetDevice(ctx, "b")
	if b.Status != "online" || !b.FirstSeen.Equal(t0) {
		t.Errorf("device b after a new reading = %+v", b)
	}

	rs, err := s.ListReadings(ctx, telemetry.ReadingQuery{DeviceID: "a", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Value != 20.5 || rs[1].Value != 21.25 || *rs[1].Seq != 2 {
		t.Errorf("readings of a = %+v", rs)
	}
	if _, err := s.GetDevice(ctx, "zzz"); vigil.ErrorCode(err) != vigil.ENotFound {
		t.Errorf("missing device: %v", err)
	}
}

func TestListReadingsLatestAndSince(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []telemetry.Event
	for i := range 100 {
		evs = append(evs, reading("d", t0.Add(time.Duration(i)*time.Second), float64(i), int64(i)))
	}
	if err := s.Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	latest, _ := s.ListReadings(ctx, telemetry.ReadingQuery{DeviceID: "d", Limit: 3})
	if len(latest) != 3 || latest[0].Value != 97 || latest[2].Value != 99 {
		t.Errorf("latest 3 = %v", latest)
	}
	since, _ := s.ListReadings(ctx, telemetry.ReadingQuery{DeviceID: "d", Since: t0.Add(10 * time.Second), Limit: 2})
	if len(since) != 2 || since[0].Value != 10 || since[1].Value != 11 {
		t.Errorf("since t0+10s = %v", since)
	}
}

func TestListBucketsSummarisesByStep(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []telemetry.Event
	for i := range 100 { // 0..99, one a second
		evs = append(evs, reading("d", t0.Add(time.Duration(i)*time.Second), float64(i), int64(i)))
	}
	if err := s.Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	bs, err := s.ListBuckets(ctx, "d", t0.Add(20*time.Second), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 20..29, 30..59, 60..89, 90..99
	want := []telemetry.Bucket{
		{Time: t0, Avg: 24.5, Min: 20, Max: 29, Count: 10},
		{Time: t0.Add(30 * time.Second), Avg: 44.5, Min: 30, Max: 59, Count: 30},
		{Time: t0.Add(60 * time.Second), Avg: 74.5, Min: 60, Max: 89, Count: 30},
		{Time: t0.Add(90 * time.Second), Avg: 94.5, Min: 90, Max: 99, Count: 10},
	}
	if len(bs) != len(want) {
		t.Fatalf("buckets %+v", bs)
	}
	for i := range want {
		if !bs[i].Time.Equal(want[i].Time) || bs[i].Avg != want[i].Avg || bs[i].Min != want[i].Min || bs[i].Max != want[i].Max || bs[i].Count != want[i].Count {
			t.Errorf("bucket %d = %+v, want %+v", i, bs[i], want[i])
		}
	}
	if _, err := s.ListBuckets(ctx, "nosuch", t0, time.Minute); err == nil {
		t.Error("buckets of an unknown device: no error")
	}
}

func TestRetentionDeletesOnlyOldReadings(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Now().Add(-48 * time.Hour)
	var evs []telemetry.Event
	for i := range 250 {
		evs = append(evs, reading("d", t0.Add(time.Duration(i)*time.Minute), float64(i), int64(i)))
	}
	if err := s.Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteReadingsBefore(ctx, t0.Add(100*time.Minute), 30)
	if err != nil {
		t.Fatal(err)
	}
	left, _ := s.CountReadings(ctx)
	if n != 100 || left != 150 {
		t.Errorf("deleted %d, left %d; want 100 and 150", n, left)
	}
	if n, _ := s.DeleteReadingsBefore(ctx, time.Now(), 30); n != 150 {
		t.Errorf("deleting everything removed %d", n)
	}
	if n, err := s.DeleteReadingsBefore(ctx, time.Now(), 30); n != 0 || err != nil {
		t.Errorf("empty table: %d, %v", n, err)
	}
}

func TestMarkStale(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	now := time.Now()
	s.Apply(ctx, []telemetry.Event{reading("old", now.Add(-time.Hour), 1, 1), reading("new", now, 1, 1)})
	ids, err := s.MarkStale(ctx, now.Add(-time.Minute), now)
	if err != nil || len(ids) != 1 || ids[0] != "old" {
		t.Fatalf("stale = %v, %v", ids, err)
	}
	if d, _ := s.GetDevice(ctx, "old"); d.Status != "offline" {
		t.Errorf("old device is %s", d.Status)
	}
}

func TestUsers(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	u := &users.User{Name: "alice", Role: users.RoleViewer, PasswordHash: "h", Subscribe: []string{"vigil/#"}}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, u); vigil.ErrorCode(err) != vigil.EConflict {
		t.Errorf("duplicate user: %v", err)
	}
	u.Role = users.RoleAdmin
	if err := s.UpdateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetUser(ctx, "alice")
	if err != nil || got.Role != users.RoleAdmin || got.Subscribe[0] != "vigil/#" || len(got.Publish) != 0 {
		t.Errorf("got %+v, %v", got, err)
	}
	if err := s.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUser(ctx, "alice"); vigil.ErrorCode(err) != vigil.ENotFound {
		t.Errorf("deleted user: %v", err)
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := testDSN(t)
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.Apply(ctx, []telemetry.Event{reading("d", time.Now(), 1, 1)})
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if n, _ := s.CountReadings(ctx); n != 1 {
		t.Errorf("after reopen %d readings", n)
	}
}

// BenchmarkApply measures storing readings in batches: 2000 readings from
// 1000 devices, the shape of a 10,000-device fleet's traffic under load,
// and 250 from 5000 devices reporting every second, each reading waited
// for (group commit at about 20 batches a second).
func BenchmarkApply(b *testing.B) {
	for _, c := range []struct{ devices, batch int }{{1000, 2000}, {5000, 250}} {
		b.Run(fmt.Sprintf("devices=%d/batch=%d", c.devices, c.batch), func(b *testing.B) {
			s := openTest(b)
			ctx := context.Background()
			evs := make([]telemetry.Event, c.batch)
			ids := make([]string, c.devices)
			for i := range ids {
				ids[i] = fmt.Sprintf("dev-%d", i)
			}
			t0 := time.Now()
			next := 0 // the next reading, over all devices in turn
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range evs {
					round := next / c.devices
					evs[j] = reading(ids[next%c.devices], t0.Add(time.Duration(round)*time.Second), float64(j), int64(round))
					next++
				}
				if err := s.Apply(ctx, evs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*c.batch), "µs/reading")
		})
	}
}

func TestDeviceValuesAreFreshInTheAPIAndCheckpointedOnClose(t *testing.T) {
	path := testDSN(t)
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Apply(ctx, []telemetry.Event{reading("d", t0, 1, 1)}))
	must(s.Apply(ctx, []telemetry.Event{reading("d", t0.Add(time.Second), 2, 2)}))
	d, _ := s.GetDevice(ctx, "d")
	if *d.LastValue != 2 {
		t.Errorf("API shows last_value %v before the checkpoint, want 2", *d.LastValue)
	}
	// Without a checkpoint (a crash) the row keeps the first value; the
	// readings are all there.
	var dbValue float64
	must(s.db.QueryRowContext(ctx, `SELECT last_value FROM devices WHERE id = 'd'`).Scan(&dbValue))
	if dbValue != 1 {
		t.Errorf("the row was written on a non-structural change: %v", dbValue)
	}
	must(s.Close())
	s, err = Open(ctx, path)
	must(err)
	defer s.Close()
	d, _ = s.GetDevice(ctx, "d")
	if *d.LastValue != 2 || !d.LastSeen.Equal(t0.Add(time.Second).Truncate(time.Millisecond)) {
		t.Errorf("after Close and reopen: %+v", d)
	}
}

func TestAFailedApplyChangesNothing(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.Apply(ctx, []telemetry.Event{reading("d", time.Now(), 1, 1)}); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Apply(cancelled, []telemetry.Event{reading("d", time.Now(), 5, 2), reading("new", time.Now(), 5, 1)}); err == nil {
		t.Fatal("apply with a cancelled context succeeded")
	}
	if d, _ := s.GetDevice(ctx, "d"); *d.LastValue != 1 {
		t.Errorf("failed apply changed the cached value to %v", *d.LastValue)
	}
	if _, err := s.GetDevice(ctx, "new"); err == nil {
		t.Error("failed apply registered a device")
	}
}

func TestMetaIsKeptWithTheDevice(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	now := time.Now()
	meta := &telemetry.Meta{Capabilities: []string{"motion", "camera"}, Zone: "hall"}
	if err := s.Apply(ctx, []telemetry.Event{{DeviceID: "pi1", Site: "home", Time: now, Meta: meta}, reading("pi1", now, 0.8, 1)}); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDevice(ctx, "pi1")
	if err != nil || !d.Meta.Has("camera") || d.Meta.Zone != "hall" || d.Status != "online" {
		t.Fatalf("device %+v, %v", d, err)
	}
}

// Sites are known from their devices before anyone arms or disarms them,
// and a site set in the UI keeps its state and plan.
func TestListSitesIncludesSitesOfDevices(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := reading("t1", t0, 20, 1)
	ev2 := reading("t2", t0, 20, 1)
	ev2.Site = "barn"
	if err := s.Apply(ctx, []telemetry.Event{ev, ev2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetArmed(ctx, "barn", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPlan(ctx, "barn", "plus"); err != nil {
		t.Fatal(err)
	}
	sites, err := s.ListSites(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) != 2 || sites[0].Name != "barn" || sites[0].Armed || sites[0].Plan != "plus" ||
		sites[1].Name != "home" || !sites[1].Armed || sites[1].Plan != "" || !sites[1].Updated.Equal(t0) {
		t.Errorf("sites %+v", sites)
	}
}

func TestDeviceAccountsLoseTheLegacyTopicOnUpgrade(t *testing.T) {
	sqliteOnly(t) // an upgrade from a SQLite schema of version 6
	path := testDSN(t)
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	// Accounts as issue 9's predecessor made them: the old default ACL,
	// and a device whose admin gave it an ACL of its own.
	for _, q := range []string{
		`INSERT INTO users (name, role, hash, publish, subscribe, created, updated) VALUES ('old', 'device', 'x', '["vigil/+/%u/#","sensors/#"]', '["vigil/+/%u/#"]', 0, 0)`,
		`INSERT INTO users (name, role, hash, publish, subscribe, created, updated) VALUES ('custom', 'device', 'x', '["sensors/#"]', '[]', 0, 0)`,
		// The columns later migrations add, gone as in a database of then.
		`ALTER TABLE clips DROP COLUMN pre_roll_ms`,
		`PRAGMA user_version = 6`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if s, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old, err := s.GetUser(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if old.CanPublish("sensors/temperature", "c") || !old.CanPublish("vigil/home/old/telemetry", "c") {
		t.Errorf("after the upgrade the old default is %v", old.Publish)
	}
	if custom, _ := s.GetUser(ctx, "custom"); custom == nil || !custom.CanPublish("sensors/temperature", "c") {
		t.Error("an ACL an admin chose was changed")
	}
}

// The database holds secrets (VAPID private key, channel secrets,
// sessions): it and its WAL files are 0600 whatever the umask, and an
// older database left 0644 is made 0600 too.
func TestTheDatabaseIsPrivate(t *testing.T) {
	sqliteOnly(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		prep func(t *testing.T, path string)
	}{
		{"a new database", func(*testing.T, string) {}},
		{"a database readable by everyone", func(t *testing.T, path string) {
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				if err := os.WriteFile(p, nil, 0o644); err != nil && p == path {
					t.Fatal(err)
				}
				os.Chmod(p, 0o644)
			}
		}},
	} {
		t.Run(tc.name+" is 0600 with its -wal and -shm", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vigil.db")
			tc.prep(t, path)
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.SetSetting(ctx, "k", "v"); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				fi, err := os.Stat(p)
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v, %v; want mode 0600", filepath.Base(p), fi.Mode().Perm(), err)
				}
			}
		})
	}
}

// BenchmarkCommit measures group commits of readings as the durable
// acknowledgements make them (a small batch as soon as nothing more is
// queued), with SQLite's fsync policy NORMAL (Vigil's) and FULL (an fsync
// of the WAL at every commit, so that a power loss loses no commit):
//
//	go test -run '^$' -bench Commit ./internal/store
func BenchmarkCommit(b *testing.B) {
	sqliteOnly(b) // SQLite's fsync policies
	for _, mode := range []string{"NORMAL", "FULL"} {
		for _, batch := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("%s/batch=%d", mode, batch), func(b *testing.B) {
				synchronous = mode
				defer func() { synchronous = "NORMAL" }()
				s := openTest(b)
				ctx := context.Background()
				evs := make([]telemetry.Event, batch)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					now := time.Now()
					for j := range evs {
						evs[j] = reading(fmt.Sprintf("dev-%d", (i*batch+j)%1000), now, float64(j), int64(i))
					}
					if err := s.Apply(ctx, evs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "readings/s")
			})
		}
	}
}

// A reading delivered again (same device, device time and sequence
// number) is stored once; readings that differ in time, or carry no
// sequence number, are all kept.
func TestARedeliveredReadingIsStoredOnce(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Millisecond)
	noSeq := func(at time.Time) telemetry.Event {
		ev := reading("d", at, 5, 0)
		ev.Reading.Seq = nil
		return ev
	}
	for _, batch := range [][]telemetry.Event{
		{reading("d", t0, 1, 1), reading("d", t0.Add(time.Second), 2, 2)},
		{reading("d", t0, 1, 1)}, // redelivered
		{reading("d", t0.Add(time.Second), 2, 2), reading("d", t0, 1, 1)}, // both again, in one batch
		{reading("d", t0.Add(time.Hour), 1, 1)},                           // the device restarted its count
		{noSeq(t0), noSeq(t0)},
	} {
		if err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.CountReadings(ctx); err != nil || n != 5 {
		t.Errorf("%d readings stored (%v), want 5: two, the restarted count's, and both without a sequence number", n, err)
	}
}

// A deleted device is gone with its readings, from a reopened store too;
// a discovered device is never marked stale (its availability says).
func TestDeleteDeviceAndDiscoveredDevicesAreNotStale(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	now := time.Now()
	disc := telemetry.Event{DeviceID: "z2m", Site: "home", Time: now.Add(-time.Hour), Meta: &telemetry.Meta{Discovery: &telemetry.Discovery{Component: "binary_sensor"}}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Apply(ctx, []telemetry.Event{reading("gone", now, 1, 1), reading("kept", now, 2, 1), disc, reading("z2m", now.Add(-time.Hour), 1, 1)}))
	if ids, err := s.MarkStale(ctx, now.Add(-time.Minute), now); err != nil || len(ids) != 0 {
		t.Fatalf("stale %v %v: a discovered device was marked stale", ids, err)
	}
	must(s.DeleteDevice(ctx, "gone"))
	if _, err := s.GetDevice(ctx, "gone"); vigil.ErrorCode(err) != vigil.ENotFound {
		t.Fatalf("deleted device: %v", err)
	}
	if err := s.DeleteDevice(ctx, "gone"); vigil.ErrorCode(err) != vigil.ENotFound {
		t.Fatalf("deleting it again: %v", err)
	}
	var n int
	must(s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM readings`).Scan(&n))
	if n != 2 {
		t.Fatalf("%d readings left, want the 2 of the other devices", n)
	}
	ds, err := s.ListDevices(ctx, telemetry.DeviceFilter{})
	must(err)
	if len(ds) != 2 {
		t.Fatalf("devices %+v", ds)
	}
}
