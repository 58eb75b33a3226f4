package mqttconn

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"

	"github.com/vigilhq/vigil/internal/wsconn"
)

// Dial opens a connection for a paho.Client to the broker at u (as
// ParseBrokerURL returns it): over TLS and WebSocket each MQTT packet goes
// out whole (Whole).
func Dial(ctx context.Context, u *url.URL, cfg *tls.Config) (net.Conn, error) {
	c, err := DialRaw(ctx, u, cfg)
	if err != nil || !(tlsScheme(u.Scheme) || wsScheme(u.Scheme)) {
		return c, err
	}
	return Whole(c), nil
}

// DialRaw opens a byte stream to the broker at u: TCP for mqtt and tcp,
// TLS for mqtts, ssl and tls, WebSocket (subprotocol mqtt, on u's path)
// for ws and wss. What is written goes out as it is, half a packet
// included (the audit's probes). cfg, used for TLS, is not changed; with
// no ServerName the host's name is asked for.
func DialRaw(ctx context.Context, u *url.URL, cfg *tls.Config) (net.Conn, error) {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = u.Hostname()
	}
	switch {
	case wsScheme(u.Scheme):
		// Scheme, host and path only: a user in the URL is no HTTP login.
		c, _, err := wsconn.Dial(ctx, &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}, cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	case tlsScheme(u.Scheme):
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, "tcp", u.Host)
	default:
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Host)
	}
}

func tlsScheme(s string) bool { return s == "mqtts" || s == "ssl" || s == "tls" }

func wsScheme(s string) bool { return s == "ws" || s == "wss" }
