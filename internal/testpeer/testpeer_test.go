package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
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
