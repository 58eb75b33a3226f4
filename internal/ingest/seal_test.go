package ingest

import (
	"encoding/json"
	"strings"
	"testing"
)

// A camera's password reaches the agent it is sealed for, and nobody who
// reads the command: not in its JSON, and not with another agent's
// password.
func TestCameraPasswordsAreSealedForTheirAgent(t *testing.T) {
	sealed, err := Seal("agent-a-password", "hunter22")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(AgentCommand{Action: ActionExpect, Kind: KindRTSP, RTSP: &RTSPSource{URL: "rtsp://cam/1", Username: "admin", Password: "hunter22", Sealed: sealed}})
	if strings.Contains(string(b), "hunter22") {
		t.Fatalf("the password is in the command: %s", b)
	}
	if p, err := Unseal("agent-a-password", sealed); err != nil || p != "hunter22" {
		t.Errorf("unsealed %q, %v", p, err)
	}
	if _, err := Unseal("agent-b-password", sealed); err == nil {
		t.Error("another agent's password unseals it")
	}
	if _, err := Seal("", "hunter22"); err == nil {
		t.Error("sealed without an agent password")
	}
	again, _ := Seal("agent-a-password", "hunter22")
	if again == sealed {
		t.Error("two seals of one password are equal: no nonce")
	}
}
