package notify

import "testing"

func TestMatchHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"fcm.googleapis.com", true},
		{"FCM.googleapis.com.", true},
		{"wns2-par02p.notify.windows.com", true},
		{"a.b.notify.windows.com", true},
		{"notify.windows.com", false}, // the wildcard needs a name under it
		{"evilnotify.windows.com", false},
		{"fcm.googleapis.com.evil.example", false},
		{"googleapis.com", false},
		{"updates.push.services.mozilla.com", true},
		{"web.push.apple.com", true},
		{"push.apple.com", false},
		{"127.0.0.1", false},
	} {
		if got := matchHost(tc.host, DefaultPushServices); got != tc.want {
			t.Errorf("matchHost(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}
