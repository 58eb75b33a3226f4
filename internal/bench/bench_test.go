package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// --profile names a directory that need not exist: it is made, and the
// steady phase's profile lands in it.
func TestProfileDirectoryIsCreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "profiles", "today")
	stop := startProfiles(context.Background(), Options{Target: "mosquitto", ProfileDir: dir, Duration: time.Second}, &mosquittoTarget{})
	stop()
	fi, err := os.Stat(filepath.Join(dir, "mosquitto-fleet.cpu.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		t.Error("the fleet's CPU profile is empty")
	}
}
