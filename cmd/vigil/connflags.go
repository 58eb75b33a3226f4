package main

import (
	"flag"

	"github.com/vigilhq/vigil/internal/mqttconn"
)

// connFlags are the flags of commands that connect to a broker as a client.
type connFlags struct {
	brokers, username, password, ca, cert, key string
	insecure                                   bool
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.brokers, "broker", "mqtt://127.0.0.1:1883", "broker URL(s), comma-separated, tried in order (mqtt, mqtts, ws, wss)")
	fs.StringVar(&c.username, "username", "", "MQTT username")
	fs.StringVar(&c.password, "password", "", "MQTT password (or $VIGIL_MQTT_PASSWORD)")
	fs.StringVar(&c.ca, "ca", "", "CA certificate (PEM) to verify a TLS broker")
	fs.StringVar(&c.cert, "cert", "", "client certificate (PEM)")
	fs.StringVar(&c.key, "key", "", "client key (PEM)")
	fs.BoolVar(&c.insecure, "insecure", false, "do not verify the broker's TLS certificate")
}

// passwordOf returns --password, or $VIGIL_MQTT_PASSWORD, which keeps it off
// the command line.
func (c *connFlags) passwordOf(e *env) string {
	if c.password != "" {
		return c.password
	}
	return e.getenv("VIGIL_MQTT_PASSWORD")
}

func (c *connFlags) tls() mqttconn.TLS {
	return mqttconn.TLS{CA: c.ca, Cert: c.cert, Key: c.key, Insecure: c.insecure}
}
