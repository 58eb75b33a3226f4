// Package pgtemp runs a throwaway PostgreSQL server from Debian's
// postgresql package, for the tests (internal/testpeer) and `vigil bench`.
package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a PostgreSQL server of Vigil's tests and benchmarks, from Debian's
// postgresql package: a cluster made by initdb in a temporary directory,
// listening on a loopback port (and a socket in that directory), run as
// the postgres user when the tests run as root (PostgreSQL refuses root).
type Server struct {
	// URL reaches the cluster's "postgres" database as its superuser.
	URL string
	cmd *exec.Cmd
	dir string
}

// Bin returns the directory of Debian's PostgreSQL programs
// (initdb, postgres), or "" when none is installed.
func Bin() string {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return ""
	}
	sort.Strings(found)
	return filepath.Dir(found[len(found)-1])
}

// Options are how a Server runs.
type Options struct {
	// Durable keeps PostgreSQL's defaults (fsync, synchronous commits);
	// otherwise they are off, for tests, which lose nothing to a crash
	// of a throwaway server.
	Durable bool
}

// Start makes and starts a cluster; Close stops it and removes it.
func Start(o Options) (*Server, error) {
	bin := Bin()
	if bin == "" {
		return nil, errors.New("PostgreSQL is not installed (Debian package postgresql)")
	}
	dir, err := os.MkdirTemp("", "vigil-pg-")
	if err != nil {
		return nil, err
	}
	p := &Server{dir: dir}
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, PostgreSQL needs its postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer log.Close()
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"}
	if !o.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	p.cmd = run("postgres", args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, p.URL)
		cancel()
		if err == nil {
			c.Close(context.Background())
			return p, nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			p.Close()
			return nil, fmt.Errorf("PostgreSQL did not answer within 30s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond) // polling a server that is starting
	}
}

// NewDatabase creates an empty database named after name (made unique)
// and returns its URL.
func (p *Server) NewDatabase(ctx context.Context, name string) (string, error) {
	c, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	name = strings.ToLower(strings.NewReplacer("/", "_", " ", "_", "-", "_").Replace(name))
	if len(name) > 40 {
		name = name[:40]
	}
	name += "_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	u, _ := url.Parse(p.URL)
	u.Path = "/" + name
	return u.String(), nil
}

// Close stops the server (a fast shutdown) and removes its cluster.
func (p *Server) Close() error {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	return os.RemoveAll(p.dir)
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
