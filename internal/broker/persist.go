package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// persistHook is mochi's bolt storage hook narrowed to what must survive a
// restart: retained messages, sessions and their subscriptions, and delayed
// wills. In-flight QoS messages are left out: the bolt hook writes each one
// in its own transaction, which would put a disk write on the path of every
// QoS 1 message (10,000 a second for a large fleet) for messages that are
// acknowledged microseconds later.
//
// It also keeps what the quotas need across a restart (the owner of each
// retained message), and stores no subscription the SUBACK refused.
type persistHook struct {
	*bolt.Hook
	quota *quotaHook
}

var persisted = []byte{
	mqtt.OnSessionEstablished,
	mqtt.OnDisconnect,
	mqtt.OnSubscribed,
	mqtt.OnUnsubscribed,
	mqtt.OnRetainMessage,
	mqtt.OnWillSent,
	mqtt.OnClientExpired,
	mqtt.OnRetainedExpired,
	mqtt.StoredClients,
	mqtt.StoredRetainedMessages,
	mqtt.StoredSubscriptions,
}

func (h persistHook) Provides(b byte) bool { return slices.Contains(persisted, b) }

// OnSubscribed stores only the subscriptions that were granted. mochi's
// hook stores every filter of a SUBSCRIBE, refused ones too (not allowed,
// beyond the quota), and mochi subscribes the client to all of them when
// it restarts.
func (h persistHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	var granted packets.Subscriptions
	var codes []byte
	for i, sub := range pk.Filters {
		if i < len(reasonCodes) && reasonCodes[i] < packets.ErrUnspecifiedError.Code {
			granted, codes = append(granted, sub), append(codes, reasonCodes[i])
		}
	}
	if len(granted) == 0 {
		return
	}
	pk.Filters = granted
	h.Hook.OnSubscribed(cl, pk, codes)
}

// OnRetainMessage stores a retained message with its owner for the
// quotas. mochi's hook keeps the client's id in the record's client
// field, which nothing reads back for retained messages (the publisher's
// id is also in its origin field); Vigil keeps the owner there instead
// (quotaHook.ownerTag).
func (h persistHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.Hook.OnRetainMessage(&mqtt.Client{ID: h.quota.ownerTag(cl)}, pk, r)
}

// StoredRetainedMessages reads the retained messages and accounts them to
// their owners before mochi holds them.
func (h persistHook) StoredRetainedMessages() ([]storage.Message, error) {
	v, err := h.Hook.StoredRetainedMessages()
	if err == nil {
		h.quota.restore(v)
	}
	return v, err
}

func addPersistence(m *mqtt.Server, path string, quota *quotaHook, log *slog.Logger) (mqtt.Hook, error) {
	const timeout = 2 * time.Second
	inUse := fmt.Errorf("open %s: another vigil is using this data directory (set --data-dir)", path)
	h := persistHook{Hook: new(bolt.Hook), quota: quota}
	err := m.AddHook(h, &bolt.Options{
		Path: path,
		// NoSync: a crash of the machine may lose the last retained
		// messages, never corrupt older ones; a crash of Vigil loses
		// nothing (the OS has the writes).
		Options: &bbolt.Options{Timeout: timeout, NoSync: true},
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, inUse
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return h, nil
}
