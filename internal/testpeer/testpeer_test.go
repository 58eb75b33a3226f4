package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// Mosquitto starts with a password file, an ACL, TLS and WebSocket, and
// its TLS listener presents the test certificate.
func TestMosquittoStartsWithEveryListener(t *testing.T) {
	cert := SelfSigned(t, t.TempDir(), CertOptions{})
	m := StartMosquitto(t, MosquittoConfig{Users: map[string]string{"alice": "alice-pass"}, ACL: "user alice\ntopic readwrite a/#\n", TLS: &cert, WebSocket: true})
	pem, _ := os.ReadFile(cert.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.TLSPort), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS listener: %v\n%s", err, m.Log())
	}
	c.Close()
	if m.Port == 0 || m.WSPort == 0 {
		t.Errorf("ports %+v", m)
	}
	m.Stop()
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port)); err == nil {
		c.Close()
		t.Fatal("a stopped mosquitto still listens")
	}
	m.Restart()
	c2, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port))
	if err != nil {
		t.Fatalf("after Restart: %v", err)
	}
	c2.Close()
}

// A listener that answers on Mosquitto's port but is another program's
// (Mosquitto could not bind it and exited) is not taken for Mosquitto.
func TestAMosquittoThatCouldNotBindIsNoticed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	m := &Mosquitto{Dir: t.TempDir(), t: t, bin: Need(t, "mosquitto"), ports: []int{ln.Addr().(*net.TCPAddr).Port}}
	m.conf = m.Dir + "/mosquitto.conf"
	conf := fmt.Sprintf("log_dest stderr\nlistener %d 127.0.0.1\n", m.ports[0])
	if os.Geteuid() == 0 {
		conf = "user root\n" + conf
	}
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	if err := m.launch(); err == nil {
		t.Fatal("a Mosquitto that exited was taken as started")
	}
	// What StartMosquitto looks for to try other ports.
	if !strings.Contains(m.Log(), "in use") {
		t.Errorf("mosquitto's log: %s", m.Log())
	}
}
