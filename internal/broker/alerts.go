package broker

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/internal/alert"
)

// Alerts makes the broker an alert source: one alert while any client or
// address is blocked (however many follow), one while subscribers lose
// messages because they do not keep up.
func (s *Server) Alerts(context.Context) []alert.Alert {
	var out []alert.Alert
	if blocks := s.Blocks(); len(blocks) > 0 {
		var keys []string
		for _, b := range blocks {
			keys = append(keys, b.Key)
		}
		sort.Strings(keys)
		out = append(out, alert.New(alert.KindBlocks, "", alert.Warning, strconv.Itoa(len(blocks))+" MQTT clients or addresses are blocked", strings.Join(keys, ", ")))
	}
	if slow := s.SlowSubscribers(); len(slow) > 0 {
		var who []string
		for _, sub := range slow {
			w := sub.ClientID
			if sub.Username != "" {
				w += " (" + sub.Username + ")"
			}
			who = append(who, fmt.Sprintf("%s: %d dropped", w, sub.Dropped))
		}
		out = append(out, alert.New(alert.KindSlowSubscribers, "", alert.Warning,
			strconv.Itoa(len(slow))+" MQTT subscribers are losing messages: they do not keep up",
			strings.Join(who, ", ")+" (mqtt.max_queued_messages)"))
	}
	return out
}
