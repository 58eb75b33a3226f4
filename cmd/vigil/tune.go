package main

import (
	"os"
	"slices"
	"strings"
	"syscall"
)

// upRuntimeSetting is the Go runtime setting `vigil up` runs with: the
// garbage collector does not shrink goroutine stacks.
//
// mochi runs two goroutines a client, and a client's reader goes 16.5 KB
// deep in mochi's own frames on each PUBLISH, so its stack is 32 KB while
// it handles one. Each GC halved the stacks of the readers that were
// waiting between messages, and each reader grew its stack back on its
// next message, a second later: 5,000 devices publishing every second
// spent 4 % of the broker's CPU copying stacks (runtime.newstack,
// runtime.shrinkstack), and the stacks the GC freed were taken by the heap
// while new ones were allocated, which raised the peak RSS by 14 %
// (523, 537 and 515 MB against 453, 448 and 469 MB, docs/benchmarks.md).
// The cost: an idle connection keeps the largest stack it needed.
//
// The setting cannot be made from inside a running program, nor by a
// //go:debug line (the go command knows only compatibility settings), so
// `vigil up` starts itself again with it in GODEBUG (see tuneRuntime). A
// GODEBUG that names it already is the user's choice and is left as it is.
const upRuntimeSetting = "gcshrinkstackoff=1"

// tunedEnv returns env with upRuntimeSetting added to GODEBUG, and whether
// it added it: not when GODEBUG sets gcshrinkstackoff already. Like the
// runtime, it reads the first GODEBUG of env.
func tunedEnv(env []string) ([]string, bool) {
	key, _, _ := strings.Cut(upRuntimeSetting, "=")
	i := slices.IndexFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	godebug := ""
	if i >= 0 {
		godebug = strings.TrimPrefix(env[i], "GODEBUG=")
	}
	for s := range strings.SplitSeq(godebug, ",") {
		if k, _, _ := strings.Cut(s, "="); strings.TrimSpace(k) == key {
			return env, false
		}
	}
	if strings.TrimSpace(godebug) != "" {
		godebug += ","
	}
	out := slices.Clone(env)
	if i < 0 {
		return append(out, "GODEBUG="+upRuntimeSetting), true
	}
	out[i] = "GODEBUG=" + godebug + upRuntimeSetting
	return out, true
}

// tuneRuntime makes `vigil up` run with upRuntimeSetting: it replaces the
// process (same PID, same arguments) with the same executable and the
// setting added to GODEBUG. It returns only if nothing had to be done or
// that failed; Vigil then runs without the setting, which costs memory
// and CPU, nothing else.
func tuneRuntime(args []string) {
	if len(args) < 2 || args[1] != "up" {
		return
	}
	env, changed := tunedEnv(os.Environ())
	if !changed {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, args, env)
}
