package alert

import (
	"context"
	"fmt"
	"syscall"
)

// Disk is a Source: a critical alert while the volume holding Path is
// almost full.
type Disk struct {
	Name string // what is on it, as the alert says: "data", "clips"
	Path string
}

// Alerts reports the volume if it is almost full; a path that cannot be
// looked at reports nothing.
func (d Disk) Alerts(context.Context) []Alert {
	if d.Path == "" {
		return nil
	}
	var st syscall.Statfs_t
	if syscall.Statfs(d.Path, &st) != nil || st.Blocks == 0 {
		return nil
	}
	size, free := st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
	if !almostFull(size, free) {
		return nil
	}
	return []Alert{New(KindDisk, d.Name, Critical, fmt.Sprintf("The %s disk is almost full", d.Name),
		fmt.Sprintf("%.1f%% (%d MiB) free at %s", float64(free)/float64(size)*100, free>>20, d.Path))}
}

// almostFull reports whether a volume of size bytes with free bytes left
// is almost full: under 5 % free, or under 512 MiB free on a volume large
// enough for that to be little (a tenth of it at most, so that a small
// volume is not "almost full" while nearly empty).
func almostFull(size, free uint64) bool {
	return float64(free) < 0.05*float64(size) || free < min(512<<20, size/10)
}
