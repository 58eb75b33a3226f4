package broker

import (
	"errors"
	"fmt"
	"slices"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"go.etcd.io/bbolt"
)

// persistHook is mochi's bolt storage hook narrowed to what must survive a
// restart: retained messages, sessions and their subscriptions, and delayed
// wills. In-flight QoS messages are left out: the bolt hook writes each one
// in its own transaction, which would put a disk write on the path of every
// QoS 1 message (10,000 a second for a large fleet) for messages that are
// acknowledged microseconds later.
type persistHook struct {
	*bolt.Hook
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

func addPersistence(m *mqtt.Server, path string) (mqtt.Hook, error) {
	h := persistHook{new(bolt.Hook)}
	err := m.AddHook(h, &bolt.Options{
		Path: path,
		// NoSync: a crash of the machine may lose the last retained
		// messages, never corrupt older ones; a crash of Vigil loses
		// nothing (the OS has the writes).
		Options: &bbolt.Options{Timeout: 2 * time.Second, NoSync: true},
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("open %s: another vigil is using this data directory (set --data-dir)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return h, nil
}
