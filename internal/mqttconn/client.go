package mqttconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
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
	if DefaultPort(u.Scheme) == 0 {
		return nil, fmt.Errorf("broker URL %q: scheme %q is not one of mqtt, tcp, mqtts, ssl, tls, ws, wss", s, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("broker URL %q has no host", s)
	}
	if u.Port() == "" {
		u.Host += ":" + strconv.Itoa(DefaultPort(u.Scheme))
	}
	return u, nil
}

// DefaultPort is the port of a broker URL scheme (ParseBrokerURL's) when
// the URL gives none: 1883 for MQTT, 8883 over TLS, 80 and 443 for
// WebSocket; 0 for a scheme it does not know.
func DefaultPort(scheme string) int {
	switch scheme {
	case "mqtt", "tcp":
		return 1883
	case "mqtts", "ssl", "tls":
		return 8883
	case "ws":
		return 80
	case "wss":
		return 443
	}
	return 0
}
