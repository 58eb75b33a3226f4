// Command vigil is a self-hosted IoT security platform in one binary: an
// embedded MQTT broker with a telemetry pipeline, a device-fleet simulator,
// and the tools around them. Run `vigil help` for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	tuneRuntime(os.Args) // vigil up: replaces the process, see upRuntimeSetting
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}, os.Environ())
	stop()
	os.Exit(code)
}
