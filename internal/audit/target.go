package audit

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// Endpoint is one way to reach a broker: a scheme on a port.
type Endpoint struct {
	Scheme string // mqtt, mqtts, ws, wss
	Host   string
	Port   int
	Path   string // ws and wss: the HTTP path (default /mqtt)
}

// TLS tells whether the endpoint speaks TLS.
func (e Endpoint) TLS() bool { return e.Scheme == "mqtts" || e.Scheme == "wss" }

// WS tells whether the endpoint is MQTT over WebSocket.
func (e Endpoint) WS() bool { return e.Scheme == "ws" || e.Scheme == "wss" }

// Addr is host:port.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// URL is the endpoint as a URL.
func (e Endpoint) URL() string {
	u := e.Scheme + "://" + e.Addr()
	if e.WS() {
		u += e.Path
	}
	return u
}

// url is the endpoint as mqttconn dials it.
func (e Endpoint) url() *url.URL {
	u := &url.URL{Scheme: e.Scheme, Host: e.Addr()}
	if e.WS() {
		u.Path = e.Path
	}
	return u
}

// Target is what one audit probes: a URL, or a bare host with the usual
// MQTT ports.
type Target struct {
	Input string
	Host  string
	// Given is true when the input named one endpoint (a URL); the
	// Endpoints are then that one, else the usual ports.
	Given     bool
	Endpoints []Endpoint
}

// Loopback tells whether the target is on this host's loopback.
func (t *Target) Loopback() bool {
	if strings.EqualFold(t.Host, "localhost") {
		return true
	}
	ip := net.ParseIP(t.Host)
	return ip != nil && ip.IsLoopback()
}

// DefaultEndpoints are the usual MQTT ports: plain, TLS, and WebSocket
// (plain and TLS) on the ports brokers commonly use.
func DefaultEndpoints(host string) []Endpoint {
	return []Endpoint{
		{Scheme: "mqtt", Host: host, Port: 1883},
		{Scheme: "mqtts", Host: host, Port: 8883},
		{Scheme: "ws", Host: host, Port: 80, Path: "/mqtt"},
		{Scheme: "wss", Host: host, Port: 443, Path: "/mqtt"},
		{Scheme: "ws", Host: host, Port: 8080, Path: "/mqtt"},
		{Scheme: "ws", Host: host, Port: 8083, Path: "/mqtt"},
		{Scheme: "wss", Host: host, Port: 8084, Path: "/mqtt"},
		{Scheme: "ws", Host: host, Port: 9001, Path: "/mqtt"},
	}
}

// ParseTarget reads mqtt://, mqtts://, ws://, wss:// URLs (tcp, ssl and tls
// are taken for mqtt and mqtts) or a bare host (IPv6 in brackets).
func ParseTarget(s string) (*Target, error) {
	if !strings.Contains(s, "://") {
		host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if host == "" || strings.ContainsAny(host, "/ ") {
			return nil, fmt.Errorf("target %q: want a host or an mqtt://, mqtts://, ws:// or wss:// URL", s)
		}
		if h, p, err := net.SplitHostPort(s); err == nil {
			// host:port without a scheme: MQTT on that port.
			port, err := strconv.Atoi(p)
			if err != nil || port < 1 || port > 65535 {
				return nil, fmt.Errorf("target %q: bad port", s)
			}
			return &Target{Input: s, Host: h, Given: true, Endpoints: []Endpoint{{Scheme: "mqtt", Host: h, Port: port}}}, nil
		}
		return &Target{Input: s, Host: host, Endpoints: DefaultEndpoints(host)}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("target %q: %v", s, err)
	}
	scheme := map[string]string{"mqtt": "mqtt", "tcp": "mqtt", "mqtts": "mqtts", "ssl": "mqtts", "tls": "mqtts", "ws": "ws", "wss": "wss"}[u.Scheme]
	if scheme == "" {
		return nil, fmt.Errorf("target %q: scheme %q is not one of mqtt, mqtts, ws, wss", s, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("target %q has no host", s)
	}
	port := mqttconn.DefaultPort(u.Scheme)
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("target %q: bad port", s)
		}
	}
	ep := Endpoint{Scheme: scheme, Host: u.Hostname(), Port: port}
	if ep.WS() {
		ep.Path = u.Path
		if ep.Path == "" {
			ep.Path = "/mqtt"
		}
	}
	return &Target{Input: s, Host: u.Hostname(), Given: true, Endpoints: []Endpoint{ep}}, nil
}
