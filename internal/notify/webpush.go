package notify

import (
	"context"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/SherClockHolmes/webpush-go"

	"github.com/vigilhq/vigil"
)

// Settings keys of the VAPID key pair (base64url, as webpush-go makes them).
const (
	SettingVAPIDPublic  = "vapid_public"
	SettingVAPIDPrivate = "vapid_private"
)

// Web Push message lifetimes at the push service while the browser is
// offline: a stale intrusion is noise, a system alert still matters.
const (
	pushTTLIntrusion = time.Hour
	pushTTLAlert     = 24 * time.Hour
)

// pushPayload is what the service worker receives.
// errNobodySubscribed: a Web Push channel with no browser to send to. It
// fails a test; a notification just has nobody to reach there.
var errNobodySubscribed = errors.New("webpush: no browser is subscribed")

type pushPayload struct {
	Title   string    `json:"title"`
	Body    string    `json:"body"`
	URL     string    `json:"url"`
	Site    string    `json:"site"`
	Camera  string    `json:"camera"`
	Time    time.Time `json:"time"`
	EventID string    `json:"event_id"`
}

// pushState is a webpush delivery's progress across attempts.
type pushState struct {
	pending   []PushSubscription // still to deliver to
	total     int
	delivered int
	gone      int     // expired subscriptions removed
	failed    []error // permanent failures
}

// errGone is a push service's 404 or 410: the subscription has expired.
var errGone = errors.New("subscription expired")

// VAPIDPublicKey returns the application server key browsers subscribe
// with (base64url), generating and storing the key pair on first use.
func (n *Notifier) VAPIDPublicKey(ctx context.Context) (string, error) {
	pub, _, err := n.vapidKeys(ctx)
	return pub, err
}

func (n *Notifier) vapidKeys(ctx context.Context) (pub, priv string, err error) {
	n.vapidMu.Lock()
	defer n.vapidMu.Unlock()
	if n.vapidPub != "" {
		return n.vapidPub, n.vapidPriv, nil
	}
	pub, err = n.store.GetSetting(ctx, SettingVAPIDPublic)
	if err == nil {
		priv, err = n.store.GetSetting(ctx, SettingVAPIDPrivate)
	}
	switch {
	case vigil.ErrorCode(err) == vigil.ENotFound:
		if priv, pub, err = webpush.GenerateVAPIDKeys(); err != nil {
			return "", "", fmt.Errorf("generate vapid keys: %w", err)
		}
		if err = n.store.SetSetting(ctx, SettingVAPIDPrivate, priv); err == nil {
			err = n.store.SetSetting(ctx, SettingVAPIDPublic, pub)
		}
		if err != nil {
			return "", "", fmt.Errorf("store vapid keys: %w", err)
		}
		n.log.Info("generated the VAPID key pair for web push", "public_key", pub)
	case err != nil:
		return "", "", fmt.Errorf("read vapid keys: %w", err)
	}
	n.vapidPub, n.vapidPriv = pub, priv
	return pub, priv, nil
}

// MaxPushSubscriptions is how many browsers one user may subscribe.
const MaxPushSubscriptions = 10

// Subscribe stores a browser's push subscription for s.User, or renews
// the keys of that user's subscription with the same endpoint. The
// endpoint must be an https URL of one of Options.PushServices that the
// outbound rules allow. Errors for the user are vigil errors: EInvalid for
// a bad subscription, EForbidden for another user's endpoint, EConflict
// beyond MaxPushSubscriptions.
func (n *Notifier) Subscribe(ctx context.Context, s PushSubscription) error {
	if err := n.validateSubscription(ctx, &s); err != nil {
		return err
	}
	if s.Created.IsZero() {
		s.Created = n.opts.Now()
	}
	if err := n.store.SavePushSubscription(ctx, &s, MaxPushSubscriptions); err != nil {
		return fmt.Errorf("save push subscription: %w", err)
	}
	n.log.Info("push subscription saved", "user", s.User, "push_service", endpointHost(s.Endpoint))
	return nil
}

// Unsubscribe removes the subscription of an endpoint: any user's if user
// is "" (admins), else only user's (a vigil.EForbidden error for another
// user's). A vigil.ENotFound error if there is none.
func (n *Notifier) Unsubscribe(ctx context.Context, endpoint, user string) error {
	if err := n.store.DeletePushSubscription(ctx, endpoint, user); err != nil {
		return fmt.Errorf("delete push subscription: %w", err)
	}
	n.log.Info("push subscription removed", "user", user, "push_service", endpointHost(endpoint))
	return nil
}

// maxEndpoint bounds an endpoint's length (those of the push services are
// a few hundred bytes).
const maxEndpoint = 2048

func (n *Notifier) validateSubscription(ctx context.Context, s *PushSubscription) error {
	// A subscription is a URL Vigil will POST to on a user's word: only
	// the push services browsers use, so that nobody can make Vigil post
	// to the local network or to itself.
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || len(s.Endpoint) > maxEndpoint {
		return vigil.Errorf(vigil.EInvalid, "push subscription endpoint: want an https URL of a browser's push service")
	}
	if !matchHost(u.Hostname(), n.opts.PushServices) {
		return vigil.Errorf(vigil.EInvalid, "push subscription endpoint: %s is not a push service Vigil sends to (notify.push_services)", u.Hostname())
	}
	if err := n.out.checkURL(ctx, u); err != nil {
		return vigil.Errorf(vigil.EInvalid, "push subscription endpoint: %v", err)
	}
	key, err := decodeKey(s.P256dh)
	if err != nil {
		return vigil.Errorf(vigil.EInvalid, "push subscription p256dh: not base64")
	}
	if _, err := ecdh.P256().NewPublicKey(key); err != nil {
		return vigil.Errorf(vigil.EInvalid, "push subscription p256dh: not a P-256 public key")
	}
	if auth, err := decodeKey(s.Auth); err != nil || len(auth) != 16 {
		return vigil.Errorf(vigil.EInvalid, "push subscription auth: want 16 bytes, base64")
	}
	return nil
}

// decodeKey decodes base64url (what browsers give) or standard base64,
// padded or not.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// endpointHost is what may be logged of an endpoint: its path is a
// capability.
func endpointHost(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil {
		return u.Host
	}
	return "?"
}

// sendWebPush sends the notification to every stored subscription; a
// retry goes only to those that failed and may succeed.
func (n *Notifier) sendWebPush(ctx context.Context, d *delivery) error {
	pub, priv, err := n.vapidKeys(ctx)
	if err != nil {
		return fmt.Errorf("webpush: %w", err)
	}
	st := d.push
	if st == nil {
		subs, err := n.store.ListPushSubscriptions(ctx)
		if err != nil {
			return fmt.Errorf("webpush: list subscriptions: %w", err)
		}
		if len(subs) == 0 {
			return permanent(errNobodySubscribed)
		}
		st = &pushState{pending: subs, total: len(subs)}
		d.push = st
	}

	payload, err := json.Marshal(pushPayload{
		Title: truncate(d.n.Title, 200), Body: truncate(d.n.Body, 1000), URL: d.n.URL,
		Site: d.n.Site, Camera: d.n.Camera, Time: d.n.Time, EventID: d.n.EventID,
	})
	if err != nil {
		return permanent(fmt.Errorf("webpush: encode payload: %w", err))
	}
	opts := &webpush.Options{
		HTTPClient: n.client,
		// webpush-go v1.4.0 prefixes "mailto:" to any subscriber not
		// starting with "https:", so a "mailto:" must go without it
		// (SherClockHolmes/webpush-go#92; Apple rejects "mailto:mailto:").
		Subscriber:      strings.TrimPrefix(n.opts.Subscriber, "mailto:"),
		VAPIDPublicKey:  pub,
		VAPIDPrivateKey: priv,
		TTL:             int(pushTTLAlert / time.Second),
		Urgency:         webpush.UrgencyNormal,
	}
	if d.n.Kind == KindIntrusion || d.n.Priority >= QuietOverride {
		opts.Urgency = webpush.UrgencyHigh
	}
	if d.n.Kind == KindIntrusion {
		opts.TTL = int(pushTTLIntrusion / time.Second)
	}

	errs := make([]error, len(st.pending))
	var wg sync.WaitGroup
	for i, s := range st.pending {
		wg.Go(func() { errs[i] = n.push(ctx, payload, s, opts) })
	}
	wg.Wait()

	var retry []PushSubscription
	var retryErr error
	for i, err := range errs {
		s := st.pending[i]
		switch {
		case err == nil:
			st.delivered++
		case errors.Is(err, errGone):
			st.gone++
			if err := n.store.DeletePushSubscription(context.WithoutCancel(ctx), s.Endpoint, ""); err != nil && vigil.ErrorCode(err) != vigil.ENotFound {
				n.log.Error("cannot remove expired push subscription", "push_service", endpointHost(s.Endpoint), "err", err)
			} else {
				n.log.Info("expired push subscription removed", "user", s.User, "push_service", endpointHost(s.Endpoint))
			}
		case isPermanent(err):
			st.failed = append(st.failed, err)
		default:
			retry = append(retry, s)
			retryErr = err
		}
	}
	st.pending = retry
	switch {
	case len(retry) > 0:
		return fmt.Errorf("webpush: %d of %d browsers not reached: %w", len(retry)+len(st.failed), st.total, retryErr)
	case len(st.failed) > 0:
		return permanent(fmt.Errorf("webpush: %d of %d browsers not reached: %w", len(st.failed), st.total, st.failed[0]))
	case st.delivered == 0:
		return permanent(fmt.Errorf("webpush: every subscription had expired (%d removed)", st.gone))
	}
	return nil
}

// push sends one encrypted message (RFC 8291, aes128gcm) with a VAPID
// signature (RFC 8292).
func (n *Notifier) push(ctx context.Context, payload []byte, s PushSubscription, opts *webpush.Options) error {
	sub := &webpush.Subscription{Endpoint: s.Endpoint, Keys: webpush.Keys{Auth: s.Auth, P256dh: s.P256dh}}
	// webpush-go appends its padding to the message's backing array: with
	// no spare capacity, each send appends to a copy of its own.
	resp, err := webpush.SendNotificationWithContext(ctx, payload[:len(payload):len(payload)], sub, opts)
	host := endpointHost(s.Endpoint)
	if err != nil {
		if refused := (*refusedError)(nil); errors.As(err, &refused) {
			return permanent(fmt.Errorf("push to %s: %w", host, refused))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("push to %s: %w", host, stripURL(err))
		}
		return permanent(fmt.Errorf("push to %s: %w", host, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return errGone
	}
	if err := checkStatus(resp); err != nil {
		return fmt.Errorf("push to %s: %w", host, err)
	}
	return nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
