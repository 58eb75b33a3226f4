package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary stand in for vigil. The in-process Vigils
// of these tests start their ingest agents as `os.Executable() agent ...`,
// which is this binary: without this it ran the whole test suite instead,
// starting a Mosquitto of its own that outlived it when the agent was
// stopped.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		main()
	}
	os.Exit(m.Run())
}
