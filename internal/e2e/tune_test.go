package e2e_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestVigilUpRunsWithStackShrinkingOff: `vigil up` starts itself again
// with the GC's stack shrinking off (cmd/vigil/tune.go, measured in
// docs/benchmarks.md), in the same process, unless GODEBUG says otherwise.
func TestVigilUpRunsWithStackShrinkingOff(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "gcshrinkstackoff=1"},
		{[]string{"GODEBUG=gctrace=0,gcshrinkstackoff=0"}, "gctrace=0,gcshrinkstackoff=0"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			vp := startVigilProcess(t, t.TempDir(), tc.env...)
			// The environment of the program the process runs now, after
			// any exec: the one we started, by its PID.
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", vp.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			var godebug []string
			for kv := range bytes.SplitSeq(b, []byte{0}) {
				if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
					godebug = append(godebug, v)
				}
			}
			if len(godebug) != 1 || godebug[0] != tc.want {
				t.Errorf("vigil up runs with GODEBUG %q, want %q", godebug, tc.want)
			}
		})
	}
}
