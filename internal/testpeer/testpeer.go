// Package testpeer starts real peers for tests: Debian's Mosquitto in a
// configuration the test writes, on free loopback ports, self-signed TLS
// certificates, and an MQTT 5 client with a persistent session (Resume). Tests that need a peer skip when it is not installed,
// and fail when CI is set (scripts/test.sh installs it).
package testpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Need returns the path of a program, skipping the test when it is not
// installed (failing it under CI).
func Need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; scripts/test.sh installs it", name)
		}
		t.Skipf("%s is not installed (scripts/test.sh installs it)", name)
	}
	return p
}

// handedOut are the ports FreePort returned in this test binary: the
// kernel may give a port that was just closed to the next listener on
// port 0, so two calls in a row could return the same one.
var handedOut sync.Map

// FreePort returns a loopback TCP port nobody listens on (now), never one
// it returned before in this test binary.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return port, nil
		}
	}
	return 0, errors.New("no free port in 100 tries")
}

// Cert is a certificate and its key on disk.
type Cert struct {
	CertFile, KeyFile string
	// CAFile verifies it: the certificate itself (it is its own CA).
	CAFile string
}

// CertOptions shape a test certificate.
type CertOptions struct {
	Hosts     []string  // IPs and DNS names; default 127.0.0.1 and localhost
	NotBefore time.Time // default an hour ago
	NotAfter  time.Time // default in a year
}

// SelfSigned writes a self-signed certificate (its own CA) and its key.
func SelfSigned(t testing.TB, dir string, o CertOptions) Cert {
	t.Helper()
	if len(o.Hosts) == 0 {
		o.Hosts = []string{"127.0.0.1", "localhost"}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "vigil-test"},
		NotBefore:    o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := Cert{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	c.CAFile = c.CertFile
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// MosquittoConfig describes a Mosquitto to start. Listeners are on
// 127.0.0.1 at free ports.
type MosquittoConfig struct {
	// Anonymous allows clients without a username.
	Anonymous bool
	// Users are written to a password file (mosquitto_passwd).
	Users map[string]string
	// ACL is the acl_file's text ("" : no ACL file).
	ACL string
	// TLS adds an MQTT-over-TLS listener with this certificate.
	TLS *Cert
	// TLSVersion, if set, is the listener's tls_version (e.g. tlsv1.1).
	TLSVersion string
	// WebSocket adds a WebSocket listener.
	WebSocket bool
	// Plain false leaves out the plain MQTT listener (TLS only).
	NoPlain bool
	// Port, if set, is the plain listener's port (else a free one).
	Port int
	// Extra lines for mosquitto.conf (global section).
	Extra string
}

// Mosquitto is a running Mosquitto.
type Mosquitto struct {
	Port, TLSPort, WSPort int
	Dir                   string

	t     testing.TB
	bin   string
	conf  string
	ports []int
	cmd   *exec.Cmd
	ended chan struct{} // closed when cmd has exited
}

// StartMosquitto writes the configuration, starts Mosquitto and waits
// until every listener accepts connections; the test's cleanup stops it.
func StartMosquitto(t testing.TB, c MosquittoConfig) *Mosquitto {
	t.Helper()
	bin := Need(t, "mosquitto")
	m := &Mosquitto{Dir: t.TempDir(), t: t}
	var conf strings.Builder
	fmt.Fprintf(&conf, "per_listener_settings false\nallow_anonymous %v\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n", c.Anonymous)
	if os.Geteuid() == 0 {
		// As root, Mosquitto becomes user mosquitto, who cannot read the
		// test's private files.
		conf.WriteString("user root\n")
	}
	if len(c.Users) > 0 {
		pw := filepath.Join(m.Dir, "passwd")
		if err := os.WriteFile(pw, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for u, p := range c.Users {
			out, err := exec.Command(Need(t, "mosquitto_passwd"), "-b", pw, u, p).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_passwd: %v: %s", err, out)
			}
		}
		fmt.Fprintf(&conf, "password_file %s\n", pw)
	}
	if c.ACL != "" {
		acl := filepath.Join(m.Dir, "acl")
		if err := os.WriteFile(acl, []byte(c.ACL), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "acl_file %s\n", acl)
	}
	conf.WriteString(c.Extra + "\n")
	var ports []int
	if !c.NoPlain {
		m.Port = c.Port
		if m.Port == 0 {
			m.Port = FreePort(t)
		}
		ports = append(ports, m.Port)
		fmt.Fprintf(&conf, "listener %d 127.0.0.1\n", m.Port)
	}
	if c.TLS != nil {
		m.TLSPort = FreePort(t)
		ports = append(ports, m.TLSPort)
		fmt.Fprintf(&conf, "listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n", m.TLSPort, c.TLS.CertFile, c.TLS.KeyFile)
		if c.TLSVersion != "" {
			fmt.Fprintf(&conf, "tls_version %s\n", c.TLSVersion)
		}
	}
	if c.WebSocket {
		m.WSPort = FreePort(t)
		ports = append(ports, m.WSPort)
		fmt.Fprintf(&conf, "listener %d 127.0.0.1\nprotocol websockets\n", m.WSPort)
	}
	cf := filepath.Join(m.Dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	m.bin, m.conf, m.ports = bin, cf, ports
	t.Cleanup(m.Stop)
	if err := m.launch(); err != nil {
		if c.Port == 0 && strings.Contains(m.Log(), "in use") {
			// A port FreePort gave this test binary was taken by another
			// one (packages' tests run side by side) before Mosquitto bound
			// it: the listener that answered was theirs. Other ports.
			return StartMosquitto(t, c)
		}
		t.Fatal(err)
	}
	return m
}

// start runs Mosquitto and waits for its listeners.
func (m *Mosquitto) start() {
	m.t.Helper()
	if err := m.launch(); err != nil {
		m.t.Fatal(err)
	}
}

// launch runs Mosquitto and waits for its listeners, and a moment more
// to see that it did not exit: a listener that answers may be another
// program's, on a port Mosquitto then failed to bind.
func (m *Mosquitto) launch() error {
	t := m.t
	t.Helper()
	log, err := os.OpenFile(filepath.Join(m.Dir, "mosquitto.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended, cmd := make(chan struct{}), m.cmd
	m.ended = ended
	go func() { cmd.Wait(); close(ended) }()
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range m.ports {
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				conf, _ := os.ReadFile(m.conf)
				return fmt.Errorf("mosquitto did not listen on %d: %s\n%s", p, m.Log(), conf)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	select {
	case <-ended:
		return fmt.Errorf("mosquitto exited: %s", m.Log())
	case <-time.After(150 * time.Millisecond):
		return nil
	}
}

// Restart starts a stopped Mosquitto again, on the same ports.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.start()
}

// Stop stops Mosquitto (SIGTERM, then SIGKILL) and waits for it.
func (m *Mosquitto) Stop() {
	if m.ended == nil {
		return
	}
	select {
	case <-m.ended:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.ended:
	case <-time.After(3 * time.Second):
		m.cmd.Process.Kill()
		<-m.ended
	}
}

// Log returns what Mosquitto logged.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.Dir, "mosquitto.log"))
	return string(b)
}
