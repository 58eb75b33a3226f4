package notify

import (
	"fmt"
	"strings"

	"github.com/vigilhq/vigil/internal/detect"
)

// EventSaved tells people of an intrusion event the first time it is
// saved; later saves of the same event, and events merged into one people
// were already told of, notify nothing. It never blocks.
func (n *Notifier) EventSaved(ev detect.Event) {
	n.toldMu.Lock()
	seen := n.told[ev.ID]
	if !seen {
		if n.told == nil || len(n.told) > 10000 {
			n.told = map[string]bool{} // old events never come back as new
		}
		n.told[ev.ID] = true
	}
	n.toldMu.Unlock()
	if seen || ev.State == detect.EventMerged {
		return // merged: its camera is already recording an event people were told of
	}
	n.Notify(IntrusionNote(ev))
}

// IntrusionNote is the notification of an intrusion event.
func IntrusionNote(ev detect.Event) Notification {
	cam := ev.Sensor
	if len(ev.Cameras) > 0 {
		cam = ev.Cameras[0]
	}
	body := fmt.Sprintf("%s saw someone", ev.Sensor)
	if ev.Distance != nil {
		body += fmt.Sprintf(" at %.1f m", *ev.Distance)
	}
	switch {
	case len(ev.Cameras) == 0:
		body += "; no camera covers it."
	default:
		body += fmt.Sprintf("; %s %s recording.", strings.Join(ev.Cameras, ", "), map[bool]string{true: "is", false: "are"}[len(ev.Cameras) == 1])
	}
	return Notification{
		Kind: KindIntrusion, Site: ev.Site, Camera: cam, Sensor: ev.Sensor, EventID: ev.ID,
		Title: "Intrusion at " + ev.Site, Body: body, Priority: ev.Priority, Time: ev.Start, URL: "/events/" + ev.ID,
	}
}
