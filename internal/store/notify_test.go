package store

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/users"
)

func TestChannelsRoundTripWithKindsAndDurations(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	hook := notify.Channel{Site: "home", Kind: notify.ChannelWebhook, Name: "hook", Enabled: true, MinPriority: 40,
		Cooldown: 1500 * time.Millisecond, QuietHours: "22:30-06:15", URL: "https://example.net/hook", Secret: "s3cret",
		Kinds: []string{notify.KindIntrusion}}
	if err := s.SaveChannel(ctx, &hook); err != nil {
		t.Fatal(err)
	}
	if hook.ID == "" {
		t.Fatal("SaveChannel gave no ID")
	}
	mq := notify.Channel{Kind: notify.ChannelMQTT, Name: "all to mqtt", Cooldown: -1 * time.Millisecond}
	if err := s.SaveChannel(ctx, &mq); err != nil {
		t.Fatal(err)
	}

	got, err := s.GetChannel(ctx, hook.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, hook) {
		t.Errorf("GetChannel = %+v, want %+v", got, hook)
	}

	t.Run("an update keeps the ID and replaces the fields", func(t *testing.T) {
		hook.Enabled, hook.Kinds, hook.Cooldown, hook.QuietHours = false, []string{notify.KindIntrusion, notify.KindAlert}, time.Minute, ""
		if err := s.SaveChannel(ctx, &hook); err != nil {
			t.Fatal(err)
		}
		got, _ := s.GetChannel(ctx, hook.ID)
		if !reflect.DeepEqual(got, hook) {
			t.Errorf("after update = %+v, want %+v", got, hook)
		}
	})

	t.Run("the list is by name and an empty Kinds stays empty", func(t *testing.T) {
		list, err := s.ListChannels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Name != "all to mqtt" || list[1].ID != hook.ID {
			t.Fatalf("ListChannels = %+v", list)
		}
		if len(list[0].Kinds) != 0 || list[0].Cooldown != -time.Millisecond {
			t.Errorf("mqtt channel = %+v", list[0])
		}
	})

	t.Run("a cooldown under a millisecond keeps its sign", func(t *testing.T) {
		for _, tc := range []struct{ in, want time.Duration }{{-time.Nanosecond, -time.Millisecond}, {time.Nanosecond, time.Millisecond}, {0, 0}} {
			c := notify.Channel{Kind: notify.ChannelMQTT, Name: "zz", Cooldown: tc.in}
			if err := s.SaveChannel(ctx, &c); err != nil {
				t.Fatal(err)
			}
			got, _ := s.GetChannel(ctx, c.ID)
			if got.Cooldown != tc.want {
				t.Errorf("cooldown %v stored as %v, want %v", tc.in, got.Cooldown, tc.want)
			}
			s.DeleteChannel(ctx, c.ID)
		}
	})

	t.Run("an invalid channel is refused", func(t *testing.T) {
		bad := notify.Channel{Kind: notify.ChannelNtfy, Name: "no url"}
		if err := s.SaveChannel(ctx, &bad); vigil.ErrorCode(err) != vigil.EInvalid {
			t.Errorf("SaveChannel(no URL) = %v, want invalid", err)
		}
	})

	t.Run("deleting removes the channel and its deliveries", func(t *testing.T) {
		for _, id := range []string{hook.ID, mq.ID} {
			if err := s.AddDelivery(ctx, &notify.Delivery{ChannelID: id, Time: time.Now(), Title: "x", Attempts: 1, OK: true}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteChannel(ctx, hook.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetChannel(ctx, hook.ID); vigil.ErrorCode(err) != vigil.ENotFound {
			t.Errorf("GetChannel after delete: %v", err)
		}
		if err := s.DeleteChannel(ctx, hook.ID); vigil.ErrorCode(err) != vigil.ENotFound {
			t.Errorf("second delete: %v", err)
		}
		all, _ := s.ListDeliveries(ctx, "", 10)
		if len(all) != 1 || all[0].ChannelID != mq.ID {
			t.Errorf("deliveries after delete = %+v", all)
		}
	})
}

func TestPushSubscriptionsUpsertByEndpoint(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := notify.PushSubscription{User: "alice", Endpoint: "https://push.example/a", P256dh: "k1", Auth: "a1", Created: t0, UserAgent: "Firefox"}
	if err := s.SavePushSubscription(ctx, &a, 10); err != nil {
		t.Fatal(err)
	}
	b := notify.PushSubscription{User: "bob", Endpoint: "https://push.example/b", P256dh: "k2", Auth: "a2", Created: t0.Add(time.Minute)}
	if err := s.SavePushSubscription(ctx, &b, 10); err != nil {
		t.Fatal(err)
	}
	// The same browser subscribes again with new keys, later.
	again := notify.PushSubscription{User: "alice", Endpoint: a.Endpoint, P256dh: "k3", Auth: "a3", Created: t0.Add(time.Hour), UserAgent: "Firefox 140"}
	if err := s.SavePushSubscription(ctx, &again, 10); err != nil {
		t.Fatal(err)
	}
	if again.ID != a.ID || !again.Created.Equal(t0) {
		t.Errorf("upsert gave ID %q created %v, want the first row's %q %v", again.ID, again.Created, a.ID, t0)
	}
	want := []notify.PushSubscription{
		{ID: a.ID, User: "alice", Endpoint: a.Endpoint, P256dh: "k3", Auth: "a3", Created: t0, UserAgent: "Firefox 140"},
		{ID: b.ID, User: "bob", Endpoint: b.Endpoint, P256dh: "k2", Auth: "a2", Created: t0.Add(time.Minute)},
	}
	list, err := s.ListPushSubscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(list, want) {
		t.Errorf("ListPushSubscriptions =\n%+v\nwant\n%+v", list, want)
	}

	t.Run("another user's endpoint is refused and left alone", func(t *testing.T) {
		steal := notify.PushSubscription{User: "bob", Endpoint: a.Endpoint, P256dh: "k4", Auth: "a4"}
		if err := s.SavePushSubscription(ctx, &steal, 10); vigil.ErrorCode(err) != vigil.EForbidden {
			t.Errorf("bob saving alice's endpoint: %v, want forbidden", err)
		}
		if err := s.DeletePushSubscription(ctx, a.Endpoint, "bob"); vigil.ErrorCode(err) != vigil.EForbidden {
			t.Errorf("bob deleting alice's endpoint: %v, want forbidden", err)
		}
		if list, _ := s.ListPushSubscriptions(ctx); !reflect.DeepEqual(list, want) {
			t.Errorf("after bob's tries:\n%+v\nwant\n%+v", list, want)
		}
	})

	t.Run("a user gets no more than the limit", func(t *testing.T) {
		for i := range 3 {
			c := notify.PushSubscription{User: "carol", Endpoint: fmt.Sprint("https://push.example/c", i), P256dh: "k", Auth: "a"}
			err := s.SavePushSubscription(ctx, &c, 2)
			if want := i >= 2; (vigil.ErrorCode(err) == vigil.EConflict) != want {
				t.Errorf("carol's subscription %d with a limit of 2: %v", i+1, err)
			}
		}
		renew := notify.PushSubscription{User: "carol", Endpoint: "https://push.example/c0", P256dh: "k5", Auth: "a5"}
		if err := s.SavePushSubscription(ctx, &renew, 2); err != nil {
			t.Errorf("renewing at the limit: %v", err)
		}
	})

	t.Run("deleting takes the owner or anyone", func(t *testing.T) {
		if err := s.DeletePushSubscription(ctx, a.Endpoint, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeletePushSubscription(ctx, a.Endpoint, ""); vigil.ErrorCode(err) != vigil.ENotFound {
			t.Errorf("second delete: %v", err)
		}
		if err := s.DeletePushSubscription(ctx, b.Endpoint, ""); err != nil {
			t.Errorf("deleting bob's as an admin: %v", err)
		}
		if list, _ := s.ListPushSubscriptions(ctx); len(list) != 2 || list[0].User != "carol" {
			t.Errorf("after delete: %+v", list)
		}
	})
}

func TestDeliveriesNewestFirstPerChannel(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 5 {
		d := notify.Delivery{ChannelID: []string{"a", "b"}[i%2], Time: t0.Add(time.Duration(i) * time.Second),
			Title: fmt.Sprint("n", i), Attempts: i + 1, OK: i != 3}
		if i == 3 {
			d.Error = "status 500"
		}
		if err := s.AddDelivery(ctx, &d); err != nil {
			t.Fatal(err)
		}
		if d.ID == 0 {
			t.Fatal("AddDelivery set no ID")
		}
	}
	a, err := s.ListDeliveries(ctx, "a", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || a[0].Title != "n4" || a[1].Title != "n2" || !a[0].Time.Equal(t0.Add(4*time.Second)) || a[0].Attempts != 5 {
		t.Errorf("ListDeliveries(a, 2) = %+v", a)
	}
	b, _ := s.ListDeliveries(ctx, "b", 0)
	if len(b) != 2 || b[0].Title != "n3" || b[0].OK || b[0].Error != "status 500" || !b[1].OK {
		t.Errorf("ListDeliveries(b) = %+v", b)
	}
	if all, _ := s.ListDeliveries(ctx, "", 0); len(all) != 5 || all[0].Title != "n4" || all[4].Title != "n0" {
		t.Errorf("ListDeliveries(all) = %+v", all)
	}
	if none, err := s.ListDeliveries(ctx, "zzz", 0); err != nil || none == nil || len(none) != 0 {
		t.Errorf("ListDeliveries(unknown) = %#v, %v; want an empty list", none, err)
	}
}

func TestSettings(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if _, err := s.GetSetting(ctx, "vapid_public"); vigil.ErrorCode(err) != vigil.ENotFound {
		t.Fatalf("missing setting: %v, want not found", err)
	}
	for _, v := range []string{"one", "two"} {
		if err := s.SetSetting(ctx, "vapid_public", v); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetSetting(ctx, "vapid_public"); err != nil || got != v {
			t.Errorf("GetSetting = %q, %v; want %q", got, err, v)
		}
	}
}

func TestARemovedUsersBrowsersAreNotifiedNoMore(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	for _, name := range []string{"alice", "bob"} {
		if err := s.CreateUser(ctx, &users.User{Name: name, Role: users.RoleViewer, PasswordHash: "x"}); err != nil {
			t.Fatal(err)
		}
		sub := notify.PushSubscription{User: name, Endpoint: "https://push.example/" + name, P256dh: "k", Auth: "a", Created: time.Now()}
		if err := s.SavePushSubscription(ctx, &sub, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListPushSubscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].User != "bob" {
		t.Errorf("after removing alice the push subscriptions are %+v", list)
	}
}
