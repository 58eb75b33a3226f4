package mqttconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// TLS configures a client's TLS connections to a broker.
type TLS struct {
	CA       string `yaml:"ca"`       // PEM CA bundle to verify the broker
	Cert     string `yaml:"cert"`     // client certificate (PEM)
	Key      string `yaml:"key"`      // client key (PEM)
	Insecure bool   `yaml:"insecure"` // skip verification (testing only)
}

// TLSConfig builds a client TLS configuration (TLS 1.2 or later).
func TLSConfig(t TLS) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.Insecure}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificates in it", t.CA)
		}
		cfg.RootCAs = pool
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls cert/key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ParseBrokerURL parses a broker URL: mqtt://, tcp://, mqtts://, ssl://,
// tls://, ws:// or wss://; a bare host:port means mqtt://.
func ParseBrokerURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "mqtt://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %v", s, err)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "ssl", "tls", "ws", "wss":
	default:
		return nil, fmt.Errorf("broker URL %q: scheme %q is not one of mqtt, tcp, mqtts, ssl, tls, ws, wss", s, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("broker URL %q has no host", s)
	}
	if u.Port() == "" {
		port := map[string]string{"mqtt": "1883", "tcp": "1883", "mqtts": "8883", "ssl": "8883", "tls": "8883", "ws": "80", "wss": "443"}[u.Scheme]
		u.Host += ":" + port
	}
	return u, nil
}
