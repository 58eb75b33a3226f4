package notify_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/notify"
)

// An intrusion event is notified the first time it is saved, not at its
// later saves (recording, recorded), and an event merged into one already
// recording is not notified at all.
func TestAnEventIsNotifiedOnceWhenFirstSaved(t *testing.T) {
	pub := &publisher{}
	e := newEnv(t, pub, notify.Options{})
	e.addChannel(t, notify.Channel{Kind: notify.ChannelMQTT, Name: "mqtt", Enabled: true, Cooldown: -1})
	d := 0.4
	ev := detect.Event{ID: "ev1", Site: "home", Sensor: "pir1", Cameras: []string{"cam1", "cam2"}, Distance: &d,
		Priority: 60, Start: e.clock.Now(), State: detect.EventRecording}
	e.n.EventSaved(ev)
	ev.State = detect.EventRecorded
	e.n.EventSaved(ev)
	e.n.EventSaved(detect.Event{ID: "ev2", Site: "home", Sensor: "pir2", Cameras: []string{"cam1"}, State: detect.EventMerged})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.n.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := pub.published()
	if len(msgs) != 1 {
		t.Fatalf("%d notifications, want 1 (ev1 once, not the merged ev2)", len(msgs))
	}
	var n notify.Notification
	if err := json.Unmarshal(msgs[0].payload, &n); err != nil {
		t.Fatal(err)
	}
	if n.EventID != "ev1" || n.Camera != "cam1" || n.Title != "Intrusion at home" || n.Body != "pir1 saw someone at 0.4 m; cam1, cam2 are recording." {
		t.Errorf("notification %+v", n)
	}
}
