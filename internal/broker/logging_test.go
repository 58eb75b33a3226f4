package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/vigilhq/vigil/internal/conf"
)

// A client with a short keep-alive, or none (0, MQTT 3.1.2.10), is no
// warning: mochi warned of each one at every connection, and a fleet of
// such devices filled the log with lines the operator can do nothing
// about. The line is kept at debug.
func TestAShortKeepAliveIsNoWarning(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	c := conf.New().MQTT
	c.Listen, c.WSListen, c.Persistence = here+":0", "", false
	c.AnonymousPublish, c.AnonymousSubscribe = []string{"#"}, []string{"#"}
	s, err := Open(Config{MQTT: c, DataDir: t.TempDir()}, noUsers{},
		slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, keepAlive := range []byte{0, 3} {
		w := dialWire(t, s, 5)
		var b bytes.Buffer
		mqttString(&b, "MQTT")
		b.Write([]byte{5, 0x02, 0, keepAlive, 0})
		mqttString(&b, "short-keepalive")
		w.send(0x10, b.Bytes())
		if ack := w.expect(typConnack, "CONNACK"); ack[1] != 0 {
			t.Fatalf("keep-alive %d: CONNACK % x", keepAlive, ack)
		}
		w.conn.Close()
	}
	s.Close()
	mu.Lock()
	defer mu.Unlock()
	debug := 0
	for line := range strings.Lines(logs.String()) {
		if !strings.Contains(line, minimumKeepAliveWarning) {
			continue
		}
		if !strings.Contains(line, "level=DEBUG") {
			t.Errorf("logged above debug: %s", line)
		}
		debug++
	}
	if debug != 2 {
		t.Errorf("%d debug lines about the keep-alive, want 2 (one a connection):\n%s", debug, logs.String())
	}
}
