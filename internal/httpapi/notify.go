package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/users"
)

// Notifier is what the API needs of the notifier.
type Notifier interface {
	Test(ctx context.Context, channelID string) error
	VAPIDPublicKey(ctx context.Context) (string, error)
	Subscribe(ctx context.Context, s notify.PushSubscription) error
	Unsubscribe(ctx context.Context, endpoint, user string) error
	CheckChannel(ctx context.Context, c *notify.Channel) error
}

// ChannelView is a notification channel as the API shows it: the secret
// is never shown, only whether there is one.
type ChannelView struct {
	ID          string   `json:"id"`
	Site        string   `json:"site"` // "" = every site
	Kind        string   `json:"kind"` // webpush, ntfy, webhook, mqtt
	Name        string   `json:"name"`
	Enabled     bool     `json:"enabled"`
	MinPriority int      `json:"min_priority"`
	CooldownS   float64  `json:"cooldown_s"`  // per camera (intrusions) or per title (alerts); 0 = none
	QuietHours  string   `json:"quiet_hours"` // "HH:MM-HH:MM", local time; only priority >= 90 then
	URL         string   `json:"url,omitempty"`
	HasSecret   bool     `json:"has_secret"`
	Kinds       []string `json:"kinds"` // intrusion, alert; empty = both
}

// ChannelInput is the body of POST and PUT on channels. An omitted
// cooldown_s is the default (60 s); an omitted secret keeps the one set.
type ChannelInput struct {
	Site        string   `json:"site"`
	Kind        string   `json:"kind"`
	Name        string   `json:"name"`
	Enabled     *bool    `json:"enabled"`
	MinPriority int      `json:"min_priority"`
	CooldownS   *float64 `json:"cooldown_s"`
	QuietHours  string   `json:"quiet_hours"`
	URL         string   `json:"url"`
	Secret      *string  `json:"secret"`
	Kinds       []string `json:"kinds"`
}

func channelView(c notify.Channel) ChannelView {
	v := ChannelView{ID: c.ID, Site: c.Site, Kind: c.Kind, Name: c.Name, Enabled: c.Enabled, MinPriority: c.MinPriority,
		QuietHours: c.QuietHours, URL: c.URL, HasSecret: c.Secret != "", Kinds: c.Kinds}
	switch {
	case c.Cooldown == 0:
		v.CooldownS = notify.DefaultCooldown.Seconds()
	case c.Cooldown > 0:
		v.CooldownS = c.Cooldown.Seconds()
	}
	if v.Kinds == nil {
		v.Kinds = []string{}
	}
	return v
}

func (in ChannelInput) apply(c *notify.Channel) {
	c.Site, c.Kind, c.Name, c.MinPriority, c.QuietHours, c.URL, c.Kinds = in.Site, in.Kind, in.Name, in.MinPriority, in.QuietHours, in.URL, in.Kinds
	c.Enabled = in.Enabled == nil || *in.Enabled
	switch {
	case in.CooldownS == nil:
		c.Cooldown = 0
	case *in.CooldownS <= 0:
		c.Cooldown = -1
	default:
		c.Cooldown = time.Duration(*in.CooldownS * float64(time.Second))
	}
	if in.Secret != nil {
		c.Secret = *in.Secret
	}
}

// PushInput is a browser's PushSubscription as its toJSON() gives it.
type PushInput struct {
	Endpoint string `json:"endpoint"`
	Keys     struct {
		P256dh string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

func (s *Server) notifyRoutes(api func(string, handlerFunc)) {
	if s.deps.Notifier == nil || s.deps.NotifyStore == nil {
		return
	}
	st := s.deps.NotifyStore
	api("GET /api/v1/notify/channels", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		list, err := st.ListChannels(r.Context())
		out := []ChannelView{}
		for _, c := range list {
			out = append(out, channelView(c))
		}
		return out, err
	}))
	api("POST /api/v1/notify/channels", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		var in ChannelInput
		if err := decodeJSON(w, r, &in); err != nil {
			return nil, err
		}
		var c notify.Channel
		in.apply(&c)
		if err := s.deps.Notifier.CheckChannel(r.Context(), &c); err != nil {
			return nil, err
		}
		if err := st.SaveChannel(r.Context(), &c); err != nil {
			return nil, err
		}
		s.log.Info("notification channel added", "channel", c.ID, "kind", c.Kind, "by", UserFrom(r.Context()).Name)
		return created{channelView(c)}, nil
	}))
	api("PUT /api/v1/notify/channels/{id}", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		c, err := st.GetChannel(r.Context(), r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		var in ChannelInput
		if err := decodeJSON(w, r, &in); err != nil {
			return nil, err
		}
		in.apply(&c)
		if err := s.deps.Notifier.CheckChannel(r.Context(), &c); err != nil {
			return nil, err
		}
		if err := st.SaveChannel(r.Context(), &c); err != nil {
			return nil, err
		}
		s.log.Info("notification channel changed", "channel", c.ID, "by", UserFrom(r.Context()).Name)
		return channelView(c), nil
	}))
	api("DELETE /api/v1/notify/channels/{id}", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		if err := st.DeleteChannel(r.Context(), r.PathValue("id")); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, nil
	}))
	api("POST /api/v1/notify/channels/{id}/test", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		if err := s.deps.Notifier.Test(ctx, r.PathValue("id")); err != nil {
			if c := vigil.ErrorCode(err); c == vigil.ENotFound || c == vigil.EInvalid {
				return nil, err
			}
			return nil, vigil.Errorf(vigil.EUnavailable, "the test notification failed: %s", vigil.ErrorMessage(err))
		}
		return map[string]bool{"ok": true}, nil
	}))
	api("GET /api/v1/notify/deliveries", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		n, err := limit(r, 100, 10000)
		if err != nil {
			return nil, err
		}
		list, err := st.ListDeliveries(r.Context(), r.URL.Query().Get("channel"), n)
		if list == nil {
			list = []notify.Delivery{}
		}
		return list, err
	}))
	api("GET /api/v1/notify/vapid", func(w http.ResponseWriter, r *http.Request) (any, error) {
		k, err := s.deps.Notifier.VAPIDPublicKey(r.Context())
		return map[string]string{"public_key": k}, err
	})
	api("POST /api/v1/notify/subscriptions", func(w http.ResponseWriter, r *http.Request) (any, error) {
		var in PushInput
		if err := decodeJSONLoose(r, &in); err != nil {
			return nil, err
		}
		u := UserFrom(r.Context())
		sub := notify.PushSubscription{User: u.Name, Endpoint: in.Endpoint, P256dh: in.Keys.P256dh, Auth: in.Keys.Auth, UserAgent: r.UserAgent()}
		if err := s.deps.Notifier.Subscribe(r.Context(), sub); err != nil {
			return nil, err
		}
		s.log.Info("browser subscribed to notifications", "user", u.Name)
		return created{map[string]bool{"ok": true}}, nil
	})
	api("DELETE /api/v1/notify/subscriptions", func(w http.ResponseWriter, r *http.Request) (any, error) {
		var in PushInput
		if err := decodeJSONLoose(r, &in); err != nil {
			return nil, err
		}
		// Users remove their own devices; admins anyone's.
		u, owner := UserFrom(r.Context()), ""
		if u.Role != users.RoleAdmin {
			owner = u.Name
		}
		if err := s.deps.Notifier.Unsubscribe(r.Context(), in.Endpoint, owner); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, nil
	})
}
