package alert

import "testing"

// "Disk almost full" is relative to the volume: a small volume that is
// nearly empty is not almost full; a large one is with little room left.
func TestDiskAlmostFullIsRelativeToTheVolume(t *testing.T) {
	const MiB, GiB = 1 << 20, 1 << 30
	for _, c := range []struct {
		size, free uint64
		want       bool
	}{
		{100 * MiB, 99 * MiB, false}, // a small volume, nearly empty
		{100 * MiB, 4 * MiB, true},   // the same, 4 % free
		{1 * GiB, 300 * MiB, false},
		{8 * GiB, 400 * MiB, true}, // under 5 %
		{20 * GiB, 1200 * MiB, false},
		{200 * GiB, 11 * GiB, false},
		{200 * GiB, 9 * GiB, true},
		{4096 * GiB, 500 * MiB, true}, // 0.01 % and under 512 MiB
	} {
		if got := almostFull(c.size, c.free); got != c.want {
			t.Errorf("%d MiB free of %d MiB: almost full %v, want %v", c.free/MiB, c.size/MiB, got, c.want)
		}
	}
}
