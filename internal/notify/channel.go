package notify

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil"
)

// QuietOverride is the priority from which notifications are sent during
// quiet hours.
const QuietOverride = 90

// Validate checks a channel's fields; its errors are vigil.EInvalid errors
// that name the field.
func (c *Channel) Validate() error {
	switch c.Kind {
	case ChannelWebPush, ChannelNtfy, ChannelWebhook, ChannelMQTT:
	default:
		return vigil.Errorf(vigil.EInvalid, "channel kind %q: want webpush, ntfy, webhook or mqtt", c.Kind)
	}
	if strings.TrimSpace(c.Name) == "" || len(c.Name) > 100 {
		return vigil.Errorf(vigil.EInvalid, "channel name: want 1 to 100 characters")
	}
	if c.Site != "" && !vigil.ValidName(c.Site) {
		return vigil.Errorf(vigil.EInvalid, "channel site %q: not a valid site name", c.Site)
	}
	if c.MinPriority < 0 || c.MinPriority > 100 {
		return vigil.Errorf(vigil.EInvalid, "channel min priority %d: want 0 to 100", c.MinPriority)
	}
	if c.QuietHours != "" {
		if _, err := parseQuietHours(c.QuietHours); err != nil {
			return vigil.Errorf(vigil.EInvalid, "channel quiet hours: %v", err)
		}
	}
	for _, k := range c.Kinds {
		if k != KindIntrusion && k != KindAlert {
			return vigil.Errorf(vigil.EInvalid, "channel kinds: %q is not intrusion or alert", k)
		}
	}
	if c.Kind == ChannelNtfy || c.Kind == ChannelWebhook {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return vigil.Errorf(vigil.EInvalid, "channel URL: want an http or https URL")
		}
	}
	return nil
}

// cooldown is the channel's effective cooldown.
func (c *Channel) cooldown() time.Duration {
	switch {
	case c.Cooldown == 0:
		return DefaultCooldown
	case c.Cooldown < 0:
		return 0
	}
	return c.Cooldown
}

// accepts reports whether a notification is for this channel by site and
// kind. System-wide notifications (Site "") go to every site's channels.
func (c *Channel) accepts(n *Notification) bool {
	if c.Site != "" && n.Site != "" && c.Site != n.Site {
		return false
	}
	return len(c.Kinds) == 0 || slices.Contains(c.Kinds, n.Kind)
}

// cooldownKey is what a cooldown counts per: the camera for intrusions, the
// title for alerts.
func cooldownKey(channelID string, n *Notification) string {
	if n.Kind == KindIntrusion {
		what := n.Camera
		if what == "" {
			what = "sensor:" + n.Sensor
		}
		return channelID + "\x00" + n.Site + "\x00" + what
	}
	return channelID + "\x00" + n.Kind + "\x00" + n.Title
}

// quietHours is a daily window in minutes since midnight, start inclusive,
// end exclusive; end < start wraps midnight.
type quietHours struct{ start, end int }

// parseQuietHours parses "HH:MM-HH:MM".
func parseQuietHours(s string) (quietHours, error) {
	from, to, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return quietHours{}, fmt.Errorf("%q: want HH:MM-HH:MM", s)
	}
	start, err := parseClock(from)
	if err != nil {
		return quietHours{}, fmt.Errorf("%q: %w", s, err)
	}
	end, err := parseClock(to)
	if err != nil {
		return quietHours{}, fmt.Errorf("%q: %w", s, err)
	}
	if start == end {
		return quietHours{}, fmt.Errorf("%q: empty window", s)
	}
	return quietHours{start, end}, nil
}

func parseClock(s string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// contains reports whether t's wall clock (in t's location) is inside the
// window.
func (q quietHours) contains(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	if q.start < q.end {
		return m >= q.start && m < q.end
	}
	return m >= q.start || m < q.end
}
