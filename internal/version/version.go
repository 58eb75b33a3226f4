// Package version tells which Vigil this is.
package version

import (
	"runtime/debug"
)

// Version is set at build time with
// -ldflags "-X github.com/vigilhq/vigil/internal/version.Version=v1.2.3";
// otherwise it is the module version or the VCS revision, when known.
var Version = "dev"

func init() {
	if Version != "dev" {
		return
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		Version = v
		return
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			Version = "dev-" + s.Value[:12]
		}
	}
}
