package users

import "testing"

func TestMatchTopic(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"#", "a/b/c", true},
		{"#", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"+/b", "$x/b", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+/+", "a/b/", true},
		{"sensors/+", "sensors/temperature", true},
	}
	for _, tt := range tests {
		if got := MatchTopic(tt.filter, tt.topic); got != tt.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestFilterCovers(t *testing.T) {
	tests := []struct {
		pattern, filter string
		want            bool
	}{
		{"#", "#", true},
		{"#", "$SYS/#", false},
		{"vigil/#", "vigil/+/x/telemetry", true},
		{"vigil/#", "vigil/#", true},
		{"vigil/+/x/#", "vigil/#", false},
		{"vigil/+/x/#", "vigil/+/x/telemetry", true},
		{"vigil/+/x/#", "vigil/+/+/telemetry", false},
		{"vigil/site/+", "vigil/site/+", true},
		{"vigil/site/+", "vigil/site/#", false},
		{"vigil/site", "vigil/site", true},
		{"vigil/site", "vigil/+", false},
		{"a/#", "a", true},
	}
	for _, tt := range tests {
		if got := FilterCovers(tt.pattern, tt.filter); got != tt.want {
			t.Errorf("FilterCovers(%q, %q) = %v, want %v", tt.pattern, tt.filter, got, tt.want)
		}
	}
}

func TestACLExpandsUserAndClientButNeverIntoWildcards(t *testing.T) {
	u := &User{Name: "dev1", Role: RoleDevice, Publish: []string{"vigil/+/%u/#", "clients/%c"}}
	if !u.CanPublish("vigil/home/dev1/telemetry", "c1") {
		t.Error("device cannot publish to its own subtree")
	}
	if u.CanPublish("vigil/home/dev2/telemetry", "c1") {
		t.Error("device can publish to another device's subtree")
	}
	if !u.CanPublish("clients/c1", "c1") || u.CanPublish("clients/c2", "c1") {
		t.Error("the client-id placeholder did not expand")
	}
	if u.CanPublish("clients/x", "#") || u.CanPublish("clients/a/b", "a/b") {
		t.Error("a client id holding wildcards or separators widened the ACL")
	}
}

func TestValidate(t *testing.T) {
	for _, u := range []User{
		{Name: "bad name", Role: RoleAdmin},
		{Name: "x", Role: "root"},
		{Name: "x", Role: RoleDevice, Publish: []string{"a/#/b"}},
		{Name: "x", Role: RoleDevice, Subscribe: []string{"a+"}},
	} {
		if err := u.Validate(); err == nil {
			t.Errorf("%+v validated", u)
		}
	}
}

func TestPasswords(t *testing.T) {
	h, err := HashPassword("correct horse", 4)
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, "correct horse") || CheckPassword(h, "wrong horse") {
		t.Error("password check is wrong")
	}
	if _, err := HashPassword("short", 4); err == nil {
		t.Error("a 5-character password was accepted")
	}
	if a, b := RandomPassword(), RandomPassword(); a == b || len(a) != 24 {
		t.Errorf("random passwords %q %q", a, b)
	}
}

func TestADeviceCannotWriteAnotherDevicesReadingsOrVigilsOwnTopics(t *testing.T) {
	pub, sub := DefaultACL(RoleDevice)
	dev := &User{Name: "dev1", Role: RoleDevice, Publish: pub, Subscribe: sub}
	if dev.CanPublish("sensors/temperature", "c1") {
		t.Error("a device may write the paper's topic, where the payload names any device")
	}
	if !dev.CanPublish("vigil/home/dev1/telemetry", "c1") {
		t.Error("a device cannot write its own readings")
	}
	for _, name := range []string{"mode", "alerts", "agents"} {
		u := User{Name: name, Role: RoleDevice, Publish: pub, Subscribe: sub}
		if u.Validate() == nil {
			t.Errorf("a device account named %q validated", name)
		}
		// An account made before the rule expands %u into nothing.
		for _, topic := range []string{"vigil/home/" + name + "/set", "vigil/home/" + name, "vigil/agents/" + name + "/heartbeat"} {
			if u.CanPublish(topic, "c1") {
				t.Errorf("a device named %q may publish to %s", name, topic)
			}
		}
	}
}
