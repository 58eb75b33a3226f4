package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/notify"
)

// maxDeliveries is how many rows the delivery log keeps (all channels).
const maxDeliveries = 10000

const channelColumns = `id, site, kind, name, enabled, min_priority, cooldown_ms, quiet_hours, url, secret, kinds`

func scanChannel(row scanner) (notify.Channel, error) {
	var c notify.Channel
	var cooldown int64
	var kinds string
	if err := row.Scan(&c.ID, &c.Site, &c.Kind, &c.Name, &c.Enabled, &c.MinPriority, &cooldown, &c.QuietHours, &c.URL, &c.Secret, &kinds); err != nil {
		return c, err
	}
	c.Cooldown = time.Duration(cooldown) * time.Millisecond
	if err := json.Unmarshal([]byte(kinds), &c.Kinds); err != nil {
		return c, fmt.Errorf("channel %s kinds: %w", c.ID, err)
	}
	return c, nil
}

// ListChannels returns every notification channel, by name.
func (s *Store) ListChannels(ctx context.Context) ([]notify.Channel, error) {
	return queryAll(ctx, s.db, "list channels", scanChannel, `SELECT `+channelColumns+` FROM notify_channels ORDER BY name, id`)
}

// GetChannel returns a notification channel or a vigil.ENotFound error.
func (s *Store) GetChannel(ctx context.Context, id string) (notify.Channel, error) {
	c, err := scanChannel(s.db.QueryRowContext(ctx, `SELECT `+channelColumns+` FROM notify_channels WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return c, vigil.Errorf(vigil.ENotFound, "no notification channel %q", id)
	}
	if err != nil {
		return c, fmt.Errorf("get channel: %w", err)
	}
	return c, nil
}

// SaveChannel validates a channel and inserts or updates it; a channel
// without an ID gets one.
func (s *Store) SaveChannel(ctx context.Context, c *notify.Channel) error {
	if err := c.Validate(); err != nil {
		return err
	}
	id := c.ID
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("save channel: %w", err)
		}
		id = u.String()
	}
	kinds, _ := json.Marshal(nonNil(c.Kinds))
	now := ms(time.Now())
	_, err := s.db.ExecContext(ctx, `INSERT INTO notify_channels (`+channelColumns+`, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET site = excluded.site, kind = excluded.kind, name = excluded.name,
			enabled = excluded.enabled, min_priority = excluded.min_priority, cooldown_ms = excluded.cooldown_ms,
			quiet_hours = excluded.quiet_hours, url = excluded.url, secret = excluded.secret, kinds = excluded.kinds,
			updated = excluded.updated`,
		id, c.Site, c.Kind, c.Name, c.Enabled, c.MinPriority, cooldownMS(c.Cooldown), c.QuietHours, c.URL, c.Secret, kinds, now, now)
	if err != nil {
		return fmt.Errorf("save channel: %w", err)
	}
	c.ID = id
	return nil
}

// cooldownMS is a cooldown in whole milliseconds that keeps its meaning:
// negative (none) stays negative, positive stays positive.
func cooldownMS(d time.Duration) int64 {
	switch {
	case d < 0:
		return min(d.Milliseconds(), -1)
	case d > 0:
		return max(d.Milliseconds(), 1)
	}
	return 0
}

// DeleteChannel removes a notification channel and its delivery log.
func (s *Store) DeleteChannel(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete channel: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM notify_channels WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete channel: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return vigil.Errorf(vigil.ENotFound, "no notification channel %q", id)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM notify_deliveries WHERE channel_id = ?`, id); err != nil {
		return fmt.Errorf("delete channel deliveries: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete channel: %w", err)
	}
	return nil
}

// SavePushSubscription inserts a browser's push subscription or, for an
// endpoint of the same user, renews its keys and user agent (ID and
// creation time stay). An endpoint of another user is left alone
// (notify.ErrOthersSubscription), and a user with limit subscriptions
// gets no more (notify.ErrSubscriptionLimit). It sets s.ID and s.Created
// to the stored ones.
func (s *Store) SavePushSubscription(ctx context.Context, sub *notify.PushSubscription, limit int) error {
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the count and the insert are one step
	if err != nil {
		return fmt.Errorf("save push subscription: %w", err)
	}
	defer tx.Rollback()
	var id, owner string
	var at int64
	err = tx.QueryRowContext(ctx, `SELECT id, user_name, created FROM push_subscriptions WHERE endpoint = ?`, sub.Endpoint).Scan(&id, &owner, &at)
	switch {
	case err == nil && owner != sub.User:
		return notify.ErrOthersSubscription()
	case err == nil:
		_, err = tx.ExecContext(ctx, `UPDATE push_subscriptions SET p256dh = ?, auth = ?, user_agent = ? WHERE id = ?`,
			sub.P256dh, sub.Auth, sub.UserAgent, id)
	case errors.Is(err, sql.ErrNoRows):
		var n int
		if err = tx.QueryRowContext(ctx, `SELECT count(*) FROM push_subscriptions WHERE user_name = ?`, sub.User).Scan(&n); err != nil {
			break
		}
		if n >= limit {
			return notify.ErrSubscriptionLimit(sub.User, limit)
		}
		var u uuid.UUID
		if u, err = uuid.NewV7(); err != nil {
			break
		}
		id, at = u.String(), ms(sub.Created)
		if sub.Created.IsZero() {
			at = ms(time.Now())
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO push_subscriptions (id, user_name, endpoint, p256dh, auth, created, user_agent)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, id, sub.User, sub.Endpoint, sub.P256dh, sub.Auth, at, sub.UserAgent)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("save push subscription: %w", err)
	}
	sub.ID, sub.Created = id, fromMS(at)
	return nil
}

// DeletePushSubscription removes the subscription of an endpoint: any
// user's if user is "", else only user's (notify.ErrOthersSubscription for
// another's).
func (s *Store) DeletePushSubscription(ctx context.Context, endpoint, user string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM push_subscriptions WHERE endpoint = ? AND (? = '' OR user_name = ?)`, endpoint, user, user)
	if err != nil {
		return fmt.Errorf("delete push subscription: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	var owner string
	if err := s.db.QueryRowContext(ctx, `SELECT user_name FROM push_subscriptions WHERE endpoint = ?`, endpoint).Scan(&owner); err == nil {
		return notify.ErrOthersSubscription()
	}
	return vigil.Errorf(vigil.ENotFound, "no push subscription for that endpoint")
}

// ListPushSubscriptions returns every push subscription, oldest first.
func (s *Store) ListPushSubscriptions(ctx context.Context) ([]notify.PushSubscription, error) {
	return queryAll(ctx, s.db, "list push subscriptions", func(row scanner) (notify.PushSubscription, error) {
		var p notify.PushSubscription
		var created int64
		err := row.Scan(&p.ID, &p.User, &p.Endpoint, &p.P256dh, &p.Auth, &created, &p.UserAgent)
		p.Created = fromMS(created)
		return p, err
	}, `SELECT id, user_name, endpoint, p256dh, auth, created, user_agent FROM push_subscriptions ORDER BY created, id`)
}

// AddDelivery appends to the delivery log, which keeps the newest
// maxDeliveries rows, and sets d.ID.
func (s *Store) AddDelivery(ctx context.Context, d *notify.Delivery) error {
	err := s.db.QueryRowContext(ctx, `INSERT INTO notify_deliveries (channel_id, at, title, attempts, ok, error) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
		d.ChannelID, ms(d.Time), d.Title, d.Attempts, d.OK, d.Error).Scan(&d.ID)
	if err != nil {
		return fmt.Errorf("add delivery: %w", err)
	}
	if d.ID > maxDeliveries && d.ID%100 == 0 {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM notify_deliveries WHERE id <= ?`, d.ID-maxDeliveries); err != nil {
			return fmt.Errorf("trim deliveries: %w", err)
		}
	}
	return nil
}

// ListDeliveries returns a channel's deliveries ("" = every channel's),
// newest first.
func (s *Store) ListDeliveries(ctx context.Context, channelID string, limit int) ([]notify.Delivery, error) {
	return queryAll(ctx, s.db, "list deliveries", func(row scanner) (notify.Delivery, error) {
		var d notify.Delivery
		var at int64
		err := row.Scan(&d.ID, &d.ChannelID, &at, &d.Title, &d.Attempts, &d.OK, &d.Error)
		d.Time = fromMS(at)
		return d, err
	}, `SELECT id, channel_id, at, title, attempts, ok, error FROM notify_deliveries
		WHERE (? = '' OR channel_id = ?) ORDER BY id DESC LIMIT ?`, channelID, channelID, limitOr(limit, 100))
}

// GetSetting returns a setting or a vigil.ENotFound error.
func (s *Store) GetSetting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", vigil.Errorf(vigil.ENotFound, "no setting %q", key)
	}
	if err != nil {
		return "", fmt.Errorf("get setting: %w", err)
	}
	return v, nil
}

// SetSetting stores a setting.
func (s *Store) SetSetting(ctx context.Context, key, value string) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("set setting: %w", err)
	}
	return nil
}

var _ notify.Store = (*Store)(nil)
