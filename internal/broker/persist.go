package broker

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// persistHook is mochi's bolt storage hook narrowed and corrected to what
// must survive a restart: retained messages, sessions with their
// subscriptions and the messages queued for them (queue.go), and delayed
// wills. Messages in flight to connected clients are written only when
// their client disconnects (or Vigil stops): the bolt hook writes each one
// in its own transaction, which would put a disk write on the path of
// every QoS 1 message (10,000 a second for a large fleet) for messages
// that are acknowledged microseconds later.
//
// It also keeps what the quotas need across a restart (the owner of each
// retained message), and stores nothing a client was refused: no
// subscription the SUBACK refused, no empty retained message.
type persistHook struct {
	*bolt.Hook
	mochi *mqtt.Server
	quota *quotaHook
	queue sessionQueue
}

var persisted = []byte{
	mqtt.OnSessionEstablish,
	mqtt.OnSessionEstablished,
	mqtt.OnDisconnect,
	mqtt.OnSubscribed,
	mqtt.OnUnsubscribed,
	mqtt.OnRetainMessage,
	mqtt.OnWillSent,
	mqtt.OnClientExpired,
	mqtt.OnRetainedExpired,
	mqtt.OnQosPublish,
	mqtt.OnQosComplete,
	mqtt.OnQosDropped,
	mqtt.StoredClients,
	mqtt.StoredRetainedMessages,
	mqtt.StoredSubscriptions,
	mqtt.StoredInflightMessages,
}

func (h *persistHook) Provides(b byte) bool { return slices.Contains(persisted, b) }

// StoredSubscriptions returns only the subscriptions of the sessions mochi
// will restore, and deletes the rest from broker.bolt. The bolt hook stores
// clean sessions too; after a crash mochi drops those sessions at start but
// would still subscribe their client ids to what they had, for whoever
// connects next with such an id, whatever its ACL.
func (h *persistHook) StoredSubscriptions() ([]storage.Subscription, error) {
	subs, err := h.Hook.StoredSubscriptions()
	if err != nil {
		return nil, err
	}
	kept, err := h.keptClients()
	if err != nil {
		return nil, err
	}
	out := subs[:0]
	orphans := map[string]packets.Subscriptions{}
	for _, sub := range subs {
		if kept[sub.Client] {
			out = append(out, sub)
		} else {
			orphans[sub.Client] = append(orphans[sub.Client], packets.Subscription{Filter: sub.Filter})
		}
	}
	for id, filters := range orphans {
		h.Hook.OnUnsubscribed(&mqtt.Client{ID: id}, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe}, Filters: filters})
	}
	return out, nil
}

// keptClients returns the ids of the stored sessions mochi restores at
// start: the persistent ones.
func (h *persistHook) keptClients() (map[string]bool, error) {
	clients, err := h.Hook.StoredClients()
	if err != nil {
		return nil, err
	}
	kept := map[string]bool{}
	for _, c := range clients {
		expire := (c.ProtocolVersion == 5 && c.Properties.SessionExpiryInterval == 0) || (c.ProtocolVersion < 5 && c.Clean)
		if !expire {
			kept[c.ID] = true
		}
	}
	return kept, nil
}

// OnSubscribed stores only the subscriptions that were granted. mochi's
// hook stores every filter of a SUBSCRIBE, refused ones too (not allowed,
// beyond the quota), and mochi subscribes the client to all of them when
// it restarts.
func (h *persistHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
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
// quotas, and deletes the record when the message is cleared. mochi's
// hook keeps the client's id in the record's client field, which nothing
// reads back for retained messages (the publisher's id is also in its
// origin field); Vigil keeps the owner there instead (quotaHook.ownerTag).
// And mochi's hook stores an empty message when a topic with nothing
// retained is cleared, so that clearing topic after topic would fill the
// file; an empty message is never stored.
func (h *persistHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if len(pk.Payload) == 0 {
		h.Hook.OnRetainMessage(cl, pk, -1)
		return
	}
	h.Hook.OnRetainMessage(&mqtt.Client{ID: h.quota.ownerTag(cl)}, pk, r)
}

// StoredRetainedMessages reads the retained messages and accounts them to
// their owners before mochi holds them.
func (h *persistHook) StoredRetainedMessages() ([]storage.Message, error) {
	v, err := h.Hook.StoredRetainedMessages()
	if err == nil {
		h.quota.restore(v)
	}
	return v, err
}

func addPersistence(m *mqtt.Server, path string, quota *quotaHook, log *slog.Logger) (mqtt.Hook, error) {
	const timeout = 2 * time.Second
	inUse := fmt.Errorf("open %s: another vigil is using this data directory (set --data-dir)", path)
	before, after, err := compact(path, timeout)
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, inUse
	case err != nil:
		// The file is as it was; it only stays larger.
		log.Warn("broker.bolt not compacted", "path", path, "error", err)
	case after < before:
		log.Info("broker.bolt compacted: space of cleared messages given back", "path", path, "before_bytes", before, "after_bytes", after)
	}
	h := &persistHook{Hook: new(bolt.Hook), mochi: m, quota: quota}
	h.queue.msgs, h.queue.settled = map[string]map[uint16]*queuedMsg{}, map[string]*mqtt.Client{}
	err = m.AddHook(h, &bolt.Options{
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

// compactMinFree is the least free space in broker.bolt worth a
// compaction.
const compactMinFree = 1 << 20

// compact rewrites the bolt file at path without its free space when at
// least half of it, and at least compactMinFree, is free: bbolt reuses
// the pages of deleted records but never gives them back to the file
// system, so a file that once held many large retained messages would
// keep its size for ever. It runs before mochi opens the file (a
// compaction needs the file to itself). The copy is written beside the
// file, synced and renamed over it, so that a crash leaves either file
// whole. It returns the file's size before and after.
func compact(path string, timeout time.Duration) (before, after int64, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	before = fi.Size()
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) { // left by a compaction cut short
		return before, before, err
	}
	src, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	if err != nil {
		return before, before, err
	}
	defer src.Close()
	// In use: the pages up to the high-water mark that are not free.
	// The rest of the file is free pages and the tail bbolt allocated
	// ahead.
	var inUse int64
	if err := src.View(func(tx *bbolt.Tx) error {
		st := src.Stats()
		inUse = tx.Size() - int64(st.FreePageN+st.PendingPageN)*int64(src.Info().PageSize)
		return nil
	}); err != nil {
		return before, before, err
	}
	if free := before - inUse; free < compactMinFree || free*2 < before {
		return before, before, nil
	}
	dst, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: timeout, NoSync: true})
	if err != nil {
		return before, before, err
	}
	err = bbolt.Compact(dst, src, 4<<20)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if fi, err = os.Stat(tmp); err == nil && fi.Size() >= before {
			err = errors.New("the compacted copy is no smaller")
		}
	}
	if err == nil {
		err = src.Close()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return before, before, fmt.Errorf("compact: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // the rename
		d.Close()
	}
	return before, fi.Size(), nil
}
