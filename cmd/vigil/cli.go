package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// stdio are a command's standard streams.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// command is one subcommand of vigil.
type command struct {
	name     string
	summary  string // one line, for `vigil help`
	usage    string // synopsis after "vigil "
	help     string // what it does, in a paragraph or two
	examples string // indented example commands
	flags    func(fs *flag.FlagSet) any
	run      func(ctx context.Context, env *env, opts any, args []string) error
}

// env is what a command runs with.
type env struct {
	stdio
	environ []string
	fs      *flag.FlagSet
}

func (e *env) getenv(key string) string {
	for _, kv := range e.environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// set reports whether the flag was given on the command line.
func (e *env) set(name string) bool {
	found := false
	e.fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// commands in the order help lists them.
var commands []*command

func init() {
	commands = []*command{upCommand, simCommand, subCommand, userCommand, agentCommand, cameraCommand, imageCommand, benchCommand, auditCommand, watchCommand, versionCommand}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// run runs vigil with args and returns the exit code: 0 success, 1 failure,
// 2 a usage error.
func run(ctx context.Context, args []string, io stdio, environ []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				printHelp(io.out, c, nil)
				return 0
			}
		}
		mainHelp(io.out)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(io.err, "vigil: unknown command %q\n\n", args[0])
		mainHelp(io.err)
		return 2
	}
	fs := flag.NewFlagSet("vigil "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.err)
	var opts any
	if c.flags != nil {
		opts = c.flags(fs)
	}
	fs.Usage = func() { printHelp(io.err, c, fs) }
	positional, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(io.out, c, fs)
			return 0
		}
		return 2
	}
	e := &env{stdio: io, environ: environ, fs: fs}
	if err := c.run(ctx, e, opts, positional); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(io.err, "vigil %s: %v\nRun 'vigil %s --help' for usage.\n", c.name, err, c.name)
			return 2
		}
		fmt.Fprintf(io.err, "vigil %s: %v\n", c.name, err)
		return 1
	}
	return 0
}

// parseInterspersed parses flags wherever they stand among the arguments,
// as GNU tools do ("vigil audit HOST --fail-on high"), and returns the
// arguments that are not flags, in order. After "--" everything is an
// argument, even what starts with "-".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), nil
		}
		for len(rest) > 0 && (rest[0] == "-" || !strings.HasPrefix(rest[0], "-")) {
			positional, rest = append(positional, rest[0]), rest[1:]
		}
		if len(rest) == 0 {
			return positional, nil
		}
		args = rest
	}
}

func mainHelp(w io.Writer) {
	fmt.Fprint(w, `Vigil: a self-hosted IoT security platform. An MQTT broker with a telemetry
pipeline, a device-fleet simulator, and tools to measure them.

Usage: vigil <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'vigil <command> --help' for a command's flags and examples. Flags may
stand before or after the arguments; after "--" everything is an argument.

Quick start:
  vigil up --demo                 # broker, database, API and a demo fleet
  vigil sub 'vigil/#'             # watch the demo fleet's messages
`)
}

func printHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: vigil %s\n\n%s\n", c.usage, strings.TrimSpace(c.help))
	if fs == nil {
		fs = flag.NewFlagSet(c.name, flag.ContinueOnError)
		if c.flags != nil {
			c.flags(fs)
		}
	}
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprint(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if c.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(c.examples, "\n"))
	}
}

// newLogger builds the process logger: text or JSON on stderr.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// printJSON writes v as indented JSON, for --json output.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
