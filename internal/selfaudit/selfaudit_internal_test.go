package selfaudit

import (
	"testing"

	"github.com/vigilhq/vigil/internal/conf"
)

// The self-audit guesses passwords only against listener addresses the
// broker never blocks: guessing from another one would block the host.
func TestTheSelfAuditGuessesPasswordsOnlyFromExemptAddresses(t *testing.T) {
	a := &Auditor{cfg: Config{MQTT: conf.New().MQTT}} // block_exempt: loopback
	for host, want := range map[string]bool{"127.0.0.1": true, "::1": true, "192.0.2.2": false, "::ffff:192.0.2.2": false, "not-an-ip": false} {
		if got := a.mayGuess(host); got != want {
			t.Errorf("default exemptions, %s: %v, want %v", host, got, want)
		}
	}
	a.cfg.MQTT.BlockExempt = []string{"192.0.2.0/24"}
	if !a.mayGuess("192.0.2.2") || !a.mayGuess("::ffff:192.0.2.2") || a.mayGuess("127.0.0.1") {
		t.Error("a LAN listener in block_exempt: guessing should follow the exemptions")
	}
	a.cfg.MQTT.BlockAuthFailures = 0 // blocking off
	if !a.mayGuess("198.51.100.1") {
		t.Error("with blocking off, guessing cannot block anyone")
	}
}
