package notify

import (
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
)

func TestQuietHours(t *testing.T) {
	at := func(hh, mm int) time.Time { return time.Date(2026, 1, 10, hh, mm, 0, 0, time.Local) }
	tests := []struct {
		spec string
		t    time.Time
		want bool
	}{
		{"22:00-07:00", at(21, 59), false},
		{"22:00-07:00", at(22, 0), true}, // the start is inside
		{"22:00-07:00", at(23, 59), true},
		{"22:00-07:00", at(0, 0), true}, // wraps midnight
		{"22:00-07:00", at(6, 59), true},
		{"22:00-07:00", at(7, 0), false}, // the end is outside
		{"22:00-07:00", at(12, 0), false},
		{"09:30-17:15", at(9, 29), false},
		{"09:30-17:15", at(9, 30), true},
		{"09:30-17:15", at(17, 14), true},
		{"09:30-17:15", at(17, 15), false},
		{"09:30-17:15", at(23, 0), false},
		{" 7:05 - 8:00 ", at(7, 30), true}, // one-digit hours and spaces
		{"23:59-00:00", at(23, 59), true},
		{"23:59-00:00", at(0, 0), false},
	}
	for _, tc := range tests {
		q, err := parseQuietHours(tc.spec)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.spec, err)
		}
		if got := q.contains(tc.t); got != tc.want {
			t.Errorf("%q contains %s = %v, want %v", tc.spec, tc.t.Format("15:04"), got, tc.want)
		}
	}
	t.Run("the window is read on the wall clock of the time given", func(t *testing.T) {
		q, _ := parseQuietHours("22:00-07:00")
		paris, err := time.LoadLocation("Europe/Paris")
		if err != nil {
			t.Skip(err)
		}
		utc := time.Date(2026, 1, 10, 21, 30, 0, 0, time.UTC) // 22:30 in Paris
		if q.contains(utc) || !q.contains(utc.In(paris)) {
			t.Errorf("21:30 UTC: %v, 22:30 Paris: %v", q.contains(utc), q.contains(utc.In(paris)))
		}
	})
	for _, bad := range []string{"22:00", "22-07", "25:00-07:00", "22:00-07:60", "08:00-08:00", "ab:cd-07:00", "22:00-07:00-09:00"} {
		if _, err := parseQuietHours(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
}

func TestNtfyPriority(t *testing.T) {
	tests := []struct {
		kind     string
		priority int
		want     int
	}{
		{KindAlert, 0, 1}, {KindAlert, 19, 1}, {KindAlert, 20, 2}, {KindAlert, 50, 3}, {KindAlert, 79, 4},
		{KindAlert, 80, 5}, {KindAlert, 100, 5}, {KindAlert, -5, 1}, {KindAlert, 500, 5},
		{KindIntrusion, 0, 4}, {KindIntrusion, 70, 4}, {KindIntrusion, 90, 5},
	}
	for _, tc := range tests {
		if got := ntfyPriority(&Notification{Kind: tc.kind, Priority: tc.priority}); got != tc.want {
			t.Errorf("%s priority %d -> ntfy %d, want %d", tc.kind, tc.priority, got, tc.want)
		}
	}
}

func TestChannelValidate(t *testing.T) {
	ok := Channel{Kind: ChannelWebhook, Name: "hook", URL: "https://example.net/h"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := map[string]func(c *Channel){
		"kind":         func(c *Channel) { c.Kind = "email" },
		"name":         func(c *Channel) { c.Name = " " },
		"site":         func(c *Channel) { c.Site = "a/b" },
		"min priority": func(c *Channel) { c.MinPriority = 101 },
		"quiet hours":  func(c *Channel) { c.QuietHours = "late" },
		"kinds":        func(c *Channel) { c.Kinds = []string{"intrusion", "fire"} },
		"URL":          func(c *Channel) { c.URL = "ftp://example.net" },
	}
	for field, breakIt := range tests {
		c := ok
		breakIt(&c)
		err := c.Validate()
		if vigil.ErrorCode(err) != vigil.EInvalid || !strings.Contains(err.Error(), field) {
			t.Errorf("bad %s: %v, want an invalid error naming it", field, err)
		}
	}
	mq := Channel{Kind: ChannelMQTT, Name: "mqtt"}
	if err := mq.Validate(); err != nil {
		t.Errorf("an mqtt channel needs no URL: %v", err)
	}
}

func TestAccepts(t *testing.T) {
	tests := []struct {
		ch   Channel
		n    Notification
		want bool
	}{
		{Channel{}, Notification{Kind: KindIntrusion, Site: "home"}, true},
		{Channel{Site: "home"}, Notification{Kind: KindIntrusion, Site: "home"}, true},
		{Channel{Site: "home"}, Notification{Kind: KindIntrusion, Site: "barn"}, false},
		{Channel{Site: "home"}, Notification{Kind: KindAlert, Site: ""}, true}, // system-wide
		{Channel{Kinds: []string{KindAlert}}, Notification{Kind: KindIntrusion}, false},
		{Channel{Kinds: []string{KindAlert, KindIntrusion}}, Notification{Kind: KindIntrusion}, true},
	}
	for i, tc := range tests {
		if got := tc.ch.accepts(&tc.n); got != tc.want {
			t.Errorf("%d: channel %+v accepts %+v = %v, want %v", i, tc.ch, tc.n, got, tc.want)
		}
	}
}

func TestAbsURL(t *testing.T) {
	n := &Notifier{opts: Options{BaseURL: "https://vigil.example/"}}
	for in, want := range map[string]string{
		"/events/1":         "https://vigil.example/events/1",
		"events/1":          "https://vigil.example/events/1",
		"":                  "",
		"https://other.x/y": "https://other.x/y",
	} {
		if got := n.absURL(in); got != want {
			t.Errorf("absURL(%q) = %q, want %q", in, got, want)
		}
	}
}
