// Package notify tells people what happened: intrusion events and system
// alerts go out on notification channels (Web Push to every subscribed
// browser, ntfy topics, signed webhooks, MQTT), each channel with its own
// site, kinds, minimum priority, quiet hours and per-camera cooldown.
// Deliveries are retried with backoff, counted, logged and kept in a
// delivery log for the UI.
package notify

import (
	"context"
	"time"

	"github.com/vigilhq/vigil"
)

// Notification kinds.
const (
	KindIntrusion = "intrusion" // an intrusion event; carries the camera priority
	KindAlert     = "alert"     // a system alert: broker or agent down, disk full, security finding
)

// Channel kinds.
const (
	ChannelWebPush = "webpush" // Web Push to every stored browser subscription
	ChannelNtfy    = "ntfy"    // HTTP POST to an ntfy topic URL
	ChannelWebhook = "webhook" // signed JSON POST to a URL
	ChannelMQTT    = "mqtt"    // publish on vigil/<site>/alerts
)

// DefaultCooldown is the cooldown of a channel whose Cooldown is zero.
const DefaultCooldown = 60 * time.Second

// Notification is something to tell people. Its JSON is what webhooks and
// MQTT subscribers receive.
type Notification struct {
	Kind     string    `json:"kind"`     // KindIntrusion or KindAlert
	Site     string    `json:"site"`     // "" for system-wide alerts
	Camera   string    `json:"camera"`   // intrusions: the camera that records it
	Sensor   string    `json:"sensor"`   // intrusions: the sensor that detected it
	EventID  string    `json:"event_id"` // intrusions: the event
	Title    string    `json:"title"`    // one line
	Body     string    `json:"body"`     // a few lines of plain text
	Priority int       `json:"priority"` // 0..100; intrusions carry the camera priority
	Time     time.Time `json:"time"`     // when it happened; zero means when Notify was called
	URL      string    `json:"url"`      // absolute or path link to open (e.g. "/events/<id>")
}

// Channel is a destination for notifications and the rules that choose
// what goes there. It has no JSON form of its own: the HTTP API decides
// how to show it (the secret, for one, is write-only there).
type Channel struct {
	ID          string        // assigned on save
	Site        string        // "" = every site
	Kind        string        // ChannelWebPush, ChannelNtfy, ChannelWebhook or ChannelMQTT
	Name        string        // for people
	Enabled     bool          // disabled channels send nothing (but can be tested)
	MinPriority int           // notifications below are not sent on this channel
	Cooldown    time.Duration // at most one notification per camera (intrusions) or title (alerts) per cooldown; 0 = DefaultCooldown, negative = none
	QuietHours  string        // "" or "HH:MM-HH:MM" in the server's local time (may wrap midnight): only priority >= 90 is sent then
	URL         string        // ntfy topic URL or webhook URL
	Secret      string        // webhook: HMAC-SHA256 key; ntfy: optional bearer token
	Kinds       []string      // which Notification kinds; empty = both
}

// Delivery is the outcome of sending one notification on one channel, for
// the UI's delivery log.
type Delivery struct {
	ID        int64     `json:"id"`
	ChannelID string    `json:"channel_id"`
	Time      time.Time `json:"time"` // when the outcome was known
	Title     string    `json:"title"`
	Attempts  int       `json:"attempts"`
	OK        bool      `json:"ok"`
	Error     string    `json:"error,omitempty"` // the last error; never a secret or a channel URL
}

// PushSubscription is a browser's Web Push subscription (the PushSubscription
// the browser's push manager returns), stored for the webpush channels.
type PushSubscription struct {
	ID        string    // assigned on save
	User      string    // the Vigil user who subscribed the device
	Endpoint  string    // the push service URL; unique
	P256dh    string    // the browser's P-256 public key, base64url
	Auth      string    // the 16-byte authentication secret, base64url
	Created   time.Time // set on first save
	UserAgent string    // which browser, for the UI
}

// Store keeps channels, push subscriptions, the delivery log and settings
// (the VAPID keys). *store.Store implements it.
type Store interface {
	// ListChannels returns every channel, by name.
	ListChannels(ctx context.Context) ([]Channel, error)
	// GetChannel returns a channel or a vigil.ENotFound error.
	GetChannel(ctx context.Context, id string) (Channel, error)
	// SaveChannel inserts or updates a channel, giving it an ID if it has
	// none.
	SaveChannel(ctx context.Context, c *Channel) error
	// DeleteChannel removes a channel and its delivery log, or returns a
	// vigil.ENotFound error.
	DeleteChannel(ctx context.Context, id string) error

	// SavePushSubscription inserts a subscription, or renews the keys and
	// user agent of s.User's subscription with the same endpoint. It changes
	// nothing and returns a vigil.EForbidden error if the endpoint is
	// another user's, a vigil.EConflict error if s.User already has limit
	// subscriptions (ErrOthersSubscription, ErrSubscriptionLimit).
	SavePushSubscription(ctx context.Context, s *PushSubscription, limit int) error
	// DeletePushSubscription removes the subscription of an endpoint: any
	// user's if user is "", else only user's (a vigil.EForbidden error for
	// another's). A vigil.ENotFound error if there is none.
	DeletePushSubscription(ctx context.Context, endpoint, user string) error
	// ListPushSubscriptions returns every subscription, oldest first.
	ListPushSubscriptions(ctx context.Context) ([]PushSubscription, error)

	// AddDelivery appends to the delivery log and sets d.ID.
	AddDelivery(ctx context.Context, d *Delivery) error
	// ListDeliveries returns a channel's deliveries ("" = every channel's),
	// newest first.
	ListDeliveries(ctx context.Context, channelID string, limit int) ([]Delivery, error)

	// GetSetting returns a setting or a vigil.ENotFound error.
	GetSetting(ctx context.Context, key string) (string, error)
	// SetSetting stores a setting.
	SetSetting(ctx context.Context, key, value string) error
}

// ErrOthersSubscription is a Store's error for a push endpoint that
// another user subscribed.
func ErrOthersSubscription() error {
	return vigil.Errorf(vigil.EForbidden, "this browser is subscribed to notifications by another user; they or an admin must remove it first")
}

// ErrSubscriptionLimit is a Store's error for one push subscription too
// many.
func ErrSubscriptionLimit(user string, limit int) error {
	return vigil.Errorf(vigil.EConflict, "%s has %d browsers subscribed to notifications, the most allowed; remove one first", user, limit)
}

// Publisher publishes MQTT messages; the broker implements it.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}
