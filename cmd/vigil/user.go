package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/users"
)

type userFlags struct {
	config, dataDir, role   string
	pub, sub                stringList
	passwordStdin, generate bool
	jsonOut                 bool
}

var userCommand = &command{
	name:    "user",
	summary: "manage users: add, list, remove, passwd",
	usage:   "user add|list|remove|passwd [flags] [NAME]",
	help: `
Manages the accounts in Vigil's database (in --data-dir, or data.dir of
--config). Passwords are stored as bcrypt hashes. It works while 'vigil up'
runs; a running Vigil picks up changes within a minute.

Roles: admin (everything), viewer (read the API, subscribe), device (MQTT only).
MQTT ACLs are topic patterns with + and #, where %u stands for the username
and %c for the client id. Without --pub/--sub a user gets its role's default:
  admin   publish #, subscribe #
  viewer  subscribe vigil/#, sensors/#, $SYS/#
  device  publish and subscribe vigil/+/%u/# (its own subtree)

The password is asked for on a terminal, read from the first line of stdin
with --password-stdin, or made up and printed with --generate.

Subcommands:
  add NAME      create a user
  list          list users (--json)
  remove NAME   delete a user
  passwd NAME   change a user's password`,
	examples: `  vigil user add alice --role viewer
  vigil user add sensor-17 --role device --generate
  vigil user add gateway --role device --pub 'vigil/site1/#' --sub 'vigil/site1/+/cmd' --password-stdin < pw.txt
  vigil user list
  vigil user passwd admin
  vigil user remove alice`,
	flags: func(fs *flag.FlagSet) any {
		f := &userFlags{}
		fs.StringVar(&f.config, "config", "", "config file (for data.dir); default $VIGIL_CONFIG")
		fs.StringVar(&f.dataDir, "data-dir", "", "data directory (default: data.dir, ./vigil-data)")
		fs.StringVar(&f.role, "role", users.RoleDevice, "role for add: "+strings.Join(users.Roles, ", "))
		fs.Var(&f.pub, "pub", "topic pattern the user may publish to (repeatable)")
		fs.Var(&f.sub, "sub", "topic filter pattern the user may subscribe to (repeatable)")
		fs.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from the first line of stdin")
		fs.BoolVar(&f.generate, "generate", false, "generate a random password and print it")
		fs.BoolVar(&f.jsonOut, "json", false, "list as JSON")
		return f
	},
	run: runUser,
}

func runUser(ctx context.Context, e *env, o any, args []string) error {
	f := o.(*userFlags)
	if len(args) == 0 {
		return usagef("missing subcommand: add, list, remove or passwd")
	}
	sub, rest := args[0], args[1:]
	var name string
	if sub != "list" {
		if len(rest) < 1 {
			return usagef("%s needs a user name", sub)
		}
		name, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return usagef("unexpected argument %q", rest[0])
	}

	cfg, err := loadConfig(e, f.config)
	if err != nil {
		return err
	}
	if e.set("data-dir") {
		cfg.Data.Dir = f.dataDir
	}
	if err := os.MkdirAll(cfg.Data.Dir, 0o700); err != nil {
		return err
	}
	st, err := store.Open(ctx, filepath.Join(cfg.Data.Dir, "vigil.db"))
	if err != nil {
		return err
	}
	defer st.Close()

	switch sub {
	case "add":
		pub, subs := users.DefaultACL(f.role)
		if len(f.pub) > 0 || len(f.sub) > 0 {
			pub, subs = f.pub, f.sub
		}
		u := &users.User{Name: name, Role: f.role, Publish: pub, Subscribe: subs}
		if err := u.Validate(); err != nil {
			return err
		}
		if _, err := st.GetUser(ctx, name); err == nil {
			return fmt.Errorf("user %q already exists (use 'vigil user passwd %s' to change its password)", name, name)
		}
		if u.PasswordHash, err = askPassword(e, f, cfg.Auth.BcryptCost); err != nil {
			return err
		}
		if err := st.CreateUser(ctx, u); err != nil {
			return err
		}
		fmt.Fprintf(e.err, "added %s user %q (publish: %s; subscribe: %s)\n", u.Role, u.Name, orNone(u.Publish), orNone(u.Subscribe))
	case "passwd":
		u, err := st.GetUser(ctx, name)
		if err != nil {
			return err
		}
		if u.PasswordHash, err = askPassword(e, f, cfg.Auth.BcryptCost); err != nil {
			return err
		}
		if err := st.UpdateUser(ctx, u); err != nil {
			return err
		}
		fmt.Fprintf(e.err, "changed the password of %q\n", name)
	case "remove":
		if err := st.DeleteUser(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(e.err, "removed user %q\n", name)
	case "list":
		list, err := st.ListUsers(ctx)
		if err != nil {
			return err
		}
		if f.jsonOut {
			if list == nil {
				list = []*users.User{}
			}
			return printJSON(e.out, list)
		}
		tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tPUBLISH\tSUBSCRIBE\tCREATED")
		for _, u := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, orNone(u.Publish), orNone(u.Subscribe), u.Created.Format("2006-01-02 15:04"))
		}
		return tw.Flush()
	default:
		return usagef("unknown subcommand %q: want add, list, remove or passwd", sub)
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

// askPassword gets a new password (terminal prompt, stdin or generated) and
// returns its hash.
func askPassword(e *env, f *userFlags, cost int) (string, error) {
	var password string
	switch {
	case f.generate:
		password = users.RandomPassword()
		fmt.Fprintf(e.out, "%s\n", password)
	case f.passwordStdin:
		line, err := bufio.NewReader(e.in).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		password = strings.TrimRight(line, "\r\n")
	default:
		in, ok := e.in.(*os.File)
		if !ok || !term.IsTerminal(int(in.Fd())) {
			return "", usagef("no terminal to ask for a password: use --password-stdin or --generate")
		}
		fmt.Fprint(e.err, "Password: ")
		p1, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(e.err)
		if err != nil {
			return "", err
		}
		fmt.Fprint(e.err, "Again: ")
		p2, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(e.err)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", fmt.Errorf("the passwords differ")
		}
		password = string(p1)
	}
	return users.HashPassword(password, cost)
}
