package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/vigilhq/vigil/internal/dockerimg"
)

type imageFlags struct {
	binary, tag string
}

var imageCommand = &command{
	name:    "image",
	summary: "build the Docker image agents run in (agents.runtime: docker)",
	usage:   "image build [--binary PATH] [--tag vigil-agent:latest]",
	help: `
Builds the image of the docker agent runtime on the local Docker engine:
FROM scratch with a static vigil binary as its entrypoint. No registry is
needed or used. The binary must be statically linked; this vigil is used
if it is, else make one with:

  CGO_ENABLED=0 go build -o vigil ./cmd/vigil

Then set agents.runtime: docker (and agents.docker_image if you changed
the tag) and start 'vigil up'.`,
	examples: `  vigil image build
  CGO_ENABLED=0 go build -o /tmp/vigil ./cmd/vigil && vigil image build --binary /tmp/vigil --tag vigil-agent:dev`,
	flags: func(fs *flag.FlagSet) any {
		f := &imageFlags{}
		fs.StringVar(&f.binary, "binary", "", "static vigil binary to put in the image (default: this one)")
		fs.StringVar(&f.tag, "tag", "vigil-agent:latest", "image tag (agents.docker_image)")
		return f
	},
	run: func(ctx context.Context, e *env, o any, args []string) error {
		f := o.(*imageFlags)
		if len(args) == 0 || args[0] != "build" {
			return usagef("the only subcommand is build")
		}
		if len(args) > 1 {
			return usagef("unexpected argument %q", args[1])
		}
		bin := f.binary
		if bin == "" {
			var err error
			if bin, err = os.Executable(); err != nil {
				return err
			}
		}
		log := newLogger(e.err, "info", "text")
		if err := dockerimg.Build(ctx, bin, f.tag, log); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "built %s from %s\n", f.tag, bin)
		return nil
	},
}
