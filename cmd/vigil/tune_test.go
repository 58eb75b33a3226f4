package main

import (
	"slices"
	"testing"
)

func TestVigilUpTurnsStackShrinkingOffUnlessGODEBUGSaysOtherwise(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		want    []string
		changed bool
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=gcshrinkstackoff=1"}, true},
		{"an empty GODEBUG", []string{"GODEBUG=", "HOME=/root"}, []string{"GODEBUG=gcshrinkstackoff=1", "HOME=/root"}, true},
		{"other settings kept", []string{"GODEBUG=gctrace=1,madvdontneed=1"}, []string{"GODEBUG=gctrace=1,madvdontneed=1,gcshrinkstackoff=1"}, true},
		{"the user's 0 kept", []string{"GODEBUG=gctrace=1,gcshrinkstackoff=0"}, []string{"GODEBUG=gctrace=1,gcshrinkstackoff=0"}, false},
		{"already set: no second start", []string{"GODEBUG=gcshrinkstackoff=1"}, []string{"GODEBUG=gcshrinkstackoff=1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := tunedEnv(slices.Clone(tc.env))
			if changed != tc.changed || !slices.Equal(got, tc.want) {
				t.Errorf("tunedEnv(%q) = %q, %v; want %q, %v", tc.env, got, changed, tc.want, tc.changed)
			}
		})
	}
}
