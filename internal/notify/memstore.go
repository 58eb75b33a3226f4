package notify

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/rnd"
)

// memDeliveries is how many deliveries a MemStore keeps.
const memDeliveries = 1000

// MemStore is a Store in memory, for commands that notify without a
// database (vigil watch): what it holds ends with the process.
type MemStore struct {
	mu         sync.Mutex
	channels   []Channel
	subs       []PushSubscription
	deliveries []Delivery // oldest first, at most memDeliveries
	nextID     int64
	settings   map[string]string
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{settings: map[string]string{}} }

func (m *MemStore) ListChannels(context.Context) ([]Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.channels)
	slices.SortStableFunc(out, func(a, b Channel) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *MemStore) GetChannel(_ context.Context, id string) (Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.channels {
		if c.ID == id {
			return c, nil
		}
	}
	return Channel{}, vigil.Errorf(vigil.ENotFound, "channel %q not found", id)
}

func (m *MemStore) SaveChannel(_ context.Context, c *Channel) error {
	if err := c.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.ID == "" {
		c.ID = rnd.Hex(8)
	}
	if i := slices.IndexFunc(m.channels, func(o Channel) bool { return o.ID == c.ID }); i >= 0 {
		m.channels[i] = *c
	} else {
		m.channels = append(m.channels, *c)
	}
	return nil
}

func (m *MemStore) DeleteChannel(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.channels, func(c Channel) bool { return c.ID == id })
	if i < 0 {
		return vigil.Errorf(vigil.ENotFound, "channel %q not found", id)
	}
	m.channels = slices.Delete(m.channels, i, i+1)
	m.deliveries = slices.DeleteFunc(m.deliveries, func(d Delivery) bool { return d.ChannelID == id })
	return nil
}

func (m *MemStore) SavePushSubscription(_ context.Context, s *PushSubscription, limit int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i := slices.IndexFunc(m.subs, func(o PushSubscription) bool { return o.Endpoint == s.Endpoint }); i >= 0 {
		if m.subs[i].User != s.User {
			return ErrOthersSubscription()
		}
		s.ID, s.Created = m.subs[i].ID, m.subs[i].Created
		m.subs[i] = *s
		return nil
	}
	if n := len(slices.DeleteFunc(slices.Clone(m.subs), func(o PushSubscription) bool { return o.User != s.User })); n >= limit {
		return ErrSubscriptionLimit(s.User, limit)
	}
	s.ID, s.Created = rnd.Hex(8), time.Now()
	m.subs = append(m.subs, *s)
	return nil
}

func (m *MemStore) DeletePushSubscription(_ context.Context, endpoint, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.subs, func(s PushSubscription) bool { return s.Endpoint == endpoint })
	if i < 0 {
		return vigil.Errorf(vigil.ENotFound, "push subscription not found")
	}
	if user != "" && m.subs[i].User != user {
		return ErrOthersSubscription()
	}
	m.subs = slices.Delete(m.subs, i, i+1)
	return nil
}

func (m *MemStore) ListPushSubscriptions(context.Context) ([]PushSubscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.subs), nil
}

func (m *MemStore) AddDelivery(_ context.Context, d *Delivery) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	d.ID = m.nextID
	m.deliveries = append(m.deliveries, *d)
	if len(m.deliveries) > memDeliveries {
		m.deliveries = slices.Delete(m.deliveries, 0, len(m.deliveries)-memDeliveries)
	}
	return nil
}

func (m *MemStore) ListDeliveries(_ context.Context, channelID string, limit int) ([]Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Delivery
	for i := len(m.deliveries) - 1; i >= 0 && len(out) < limit; i-- {
		if channelID == "" || m.deliveries[i].ChannelID == channelID {
			out = append(out, m.deliveries[i])
		}
	}
	return out, nil
}

func (m *MemStore) GetSetting(_ context.Context, key string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.settings[key]
	if !ok {
		return "", vigil.Errorf(vigil.ENotFound, "setting %q not found", key)
	}
	return v, nil
}

func (m *MemStore) SetSetting(_ context.Context, key, value string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settings[key] = value
	return nil
}
