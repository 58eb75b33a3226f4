package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/vigilhq/vigil/internal/version"
)

var versionCommand = &command{
	name:     "version",
	summary:  "print Vigil's version",
	usage:    "version",
	help:     "Prints Vigil's version and the Go version it was built with.",
	examples: "  vigil version",
	run: func(_ context.Context, e *env, _ any, _ []string) error {
		fmt.Fprintf(e.out, "vigil %s (%s, %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	},
}
