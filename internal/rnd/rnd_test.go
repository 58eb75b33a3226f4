package rnd

import "testing"

func TestHexIsTwoDigitsPerByteAndDiffers(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		h := Hex(8)
		if len(h) != 16 {
			t.Fatalf("Hex(8) = %q, want 16 digits", h)
		}
		if seen[h] {
			t.Fatalf("Hex(8) repeated %q", h)
		}
		seen[h] = true
	}
}
