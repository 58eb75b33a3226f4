package hub

import "testing"

func drain(s *Sub) []Message {
	var out []Message
	for {
		select {
		case m := <-s.C:
			out = append(out, m)
		default:
			return out
		}
	}
}

// A subscriber gets the events it asked for, readings of its devices only,
// and messages without a key whatever its devices.
func TestSubscribersGetWhatTheyAskFor(t *testing.T) {
	var h Hub
	if h.Active() {
		t.Fatal("an empty hub is active")
	}
	all := h.Subscribe(nil, nil)
	dev := h.Subscribe([]string{"reading", "alerts"}, []string{"t1"})
	h.Publish(Message{Event: "reading", Key: "t1", Data: 1})
	h.Publish(Message{Event: "reading", Key: "t2", Data: 2})
	h.Publish(Message{Event: "alerts", Data: 3})
	h.Publish(Message{Event: "event", Data: 4})
	if got := drain(all); len(got) != 4 {
		t.Errorf("the subscriber to everything got %d of 4", len(got))
	}
	got := drain(dev)
	if len(got) != 2 || got[0].Data != 1 || got[1].Data != 3 {
		t.Errorf("the device subscriber got %+v, want reading t1 and the alerts", got)
	}
	h.Unsubscribe(all)
	h.Unsubscribe(dev)
	if h.Active() {
		t.Error("the hub is active with no subscriber")
	}
}

// A subscriber that does not read loses messages, counted, and never holds
// up the publisher or the others.
func TestASlowSubscriberLosesMessagesCounted(t *testing.T) {
	var h Hub
	slow := h.Subscribe(nil, nil)
	fast := h.Subscribe(nil, nil)
	const n = 1000
	got := 0
	for i := range n {
		h.Publish(Message{Event: "reading", Data: i})
		got += len(drain(fast))
	}
	if got != n {
		t.Errorf("the reading subscriber got %d of %d", got, n)
	}
	kept := len(drain(slow))
	if kept != cap(slow.C) || slow.Dropped.Load() != int64(n-kept) {
		t.Errorf("the slow subscriber kept %d and lost %d, want %d kept and the rest counted", kept, slow.Dropped.Load(), cap(slow.C))
	}
}
