package notify_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/testkit"
)

// browser is the receiving side of a push subscription: what a browser's
// push manager keeps.
type browser struct {
	key  *ecdh.PrivateKey
	auth []byte
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	return &browser{key: key, auth: auth}
}

// subscription is what the browser posts to Vigil's API.
func (b *browser) subscription(user, endpoint string) notify.PushSubscription {
	enc := base64.RawURLEncoding.EncodeToString
	return notify.PushSubscription{User: user, Endpoint: endpoint, P256dh: enc(b.key.PublicKey().Bytes()), Auth: enc(b.auth), UserAgent: "test"}
}

// decrypt opens an aes128gcm push message (RFC 8291 with RFC 8188).
func (b *browser) decrypt(body []byte) ([]byte, error) {
	// RFC 8188 section 2.1: salt(16) rs(4) idlen(1) keyid(idlen), then records.
	if len(body) < 21 {
		return nil, errors.New("short header")
	}
	salt, rs, idlen := body[:16], binary.BigEndian.Uint32(body[16:20]), int(body[20])
	if len(body) < 21+idlen || idlen != 65 {
		return nil, fmt.Errorf("keyid of %d bytes, want the sender's 65-byte public key", idlen)
	}
	senderPub, records := body[21:21+idlen], body[21+idlen:]
	if uint32(len(records)) > rs {
		return nil, fmt.Errorf("%d bytes of records: want one record of at most rs=%d", len(records), rs)
	}

	// RFC 8291 section 3.3-3.4: ECDH, then IKM = HKDF(auth, ecdh_secret,
	// "WebPush: info" 0x00 ua_public as_public, 32).
	as, err := ecdh.P256().NewPublicKey(senderPub)
	if err != nil {
		return nil, fmt.Errorf("sender key: %w", err)
	}
	secret, err := b.key.ECDH(as)
	if err != nil {
		return nil, err
	}
	info := append([]byte("WebPush: info\x00"), b.key.PublicKey().Bytes()...)
	info = append(info, senderPub...)
	ikm, err := hkdf.Key(sha256.New, secret, b.auth, string(info), 32)
	if err != nil {
		return nil, err
	}

	// RFC 8188 section 2.2-2.3: PRK = HKDF-Extract(salt, IKM), CEK and
	// NONCE from it; the first record's nonce is NONCE itself (SEQ 0).
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, records, nil)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	// The last record ends with the delimiter 0x02, then zero padding.
	plain = bytes.TrimRight(plain, "\x00")
	if len(plain) == 0 || plain[len(plain)-1] != 0x02 {
		return nil, errors.New("no last-record padding delimiter")
	}
	return plain[:len(plain)-1], nil
}

// checkVAPID checks an "vapid t=<jwt>, k=<key>" Authorization header
// (RFC 8292): the key is the server's, the JWT is signed with it (ES256)
// for the push service's origin.
func checkVAPID(t *testing.T, header, wantKey, wantAud string) {
	t.Helper()
	rest, ok := strings.CutPrefix(header, "vapid t=")
	jwt, key, ok2 := strings.Cut(rest, ", k=")
	if !ok || !ok2 {
		t.Fatalf("Authorization = %q, want vapid t=<jwt>, k=<key>", header)
	}
	if key != wantKey {
		t.Errorf("VAPID k = %q, want the server's public key %q", key, wantKey)
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT %q has %d parts", jwt, len(parts))
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("JWT part %q: %v", s, err)
		}
		return b
	}
	var head struct{ Alg, Typ string }
	var claims struct {
		Aud string
		Sub string
		Exp int64
	}
	if err := json.Unmarshal(dec(parts[0]), &head); err != nil || head.Alg != "ES256" {
		t.Errorf("JWT header %s: %v", dec(parts[0]), err)
	}
	if err := json.Unmarshal(dec(parts[1]), &claims); err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(claims.Exp, 0)
	if claims.Aud != wantAud || claims.Sub != "mailto:admin@localhost" || time.Until(exp) <= 0 || time.Until(exp) > 24*time.Hour {
		t.Errorf("JWT claims %s: want aud %s, sub mailto:admin@localhost, exp within 24 h", dec(parts[1]), wantAud)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), dec(key))
	if err != nil {
		t.Fatal(err)
	}
	sig := dec(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if len(sig) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Error("the JWT signature does not verify with the VAPID public key")
	}
}

func TestWebPushReachesEveryBrowserEncrypted(t *testing.T) {
	push := newTLSReceiver(t, func(_ int, r request) int {
		if strings.HasPrefix(r.Path, "/gone/") {
			return http.StatusGone
		}
		return http.StatusCreated
	})
	// The test's push service is on loopback: named a push service and
	// allowed as a target, as vigil.yaml would.
	e := newEnv(t, nil, notify.Options{HTTPClient: push.Client(), PushServices: []string{"127.0.0.1"}})
	ctx := context.Background()
	alice, bob, old := newBrowser(t), newBrowser(t), newBrowser(t)
	for _, s := range []notify.PushSubscription{
		alice.subscription("alice", push.URL+"/push/alice"),
		bob.subscription("bob", push.URL+"/push/bob"),
		old.subscription("alice", push.URL+"/gone/old"),
	} {
		if err := e.n.Subscribe(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	id := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebPush, Name: "browsers", Enabled: true, Cooldown: -1})
	vapid, err := e.n.VAPIDPublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}

	ev := intrusion(e, "ev1", "cam1", 70)
	e.n.Notify(ev)
	testkit.WaitFor(t, 2*time.Second, "the delivery", func() bool { return len(e.deliveries(t, id)) == 1 })

	for _, b := range []struct {
		name string
		*browser
	}{{"alice", alice}, {"bob", bob}} {
		t.Run(b.name+"'s browser decrypts the payload", func(t *testing.T) {
			reqs := push.requests("/push/" + b.name)
			if len(reqs) != 1 {
				t.Fatalf("%d requests to %s's endpoint, want 1", len(reqs), b.name)
			}
			r := reqs[0]
			for k, want := range map[string]string{"Content-Encoding": "aes128gcm", "TTL": "3600", "Urgency": "high"} {
				if got := r.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			checkVAPID(t, r.Header.Get("Authorization"), vapid, push.URL)
			plain, err := b.decrypt(r.Body)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(plain, &got); err != nil {
				t.Fatalf("payload %q: %v", plain, err)
			}
			want := map[string]any{"title": "Intrusion at home", "body": "Motion near cam1", "url": "https://vigil.example/events/ev1",
				"site": "home", "camera": "cam1", "time": ev.Time.Format(time.RFC3339Nano), "event_id": "ev1"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("payload = %v, want %v", got, want)
			}
		})
	}

	t.Run("a 410 removes the subscription", func(t *testing.T) {
		subs, err := e.st.ListPushSubscriptions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(subs) != 2 || push.count("/gone/old") != 1 {
			t.Errorf("subscriptions after the 410: %d, want 2", len(subs))
		}
		if d := e.deliveries(t, id)[0]; !d.OK || d.Attempts != 1 {
			t.Errorf("delivery = %+v, want ok: an expired subscription is not a failure", d)
		}
		e.n.Notify(notify.Notification{Kind: notify.KindAlert, Title: "Disk full", Priority: 50})
		testkit.WaitFor(t, 2*time.Second, "the second delivery", func() bool { return len(e.deliveries(t, id)) == 2 })
		if push.count("/gone/old") != 1 || push.count("/push/alice") != 2 {
			t.Errorf("after removal: %d requests to the expired endpoint, %d to alice's", push.count("/gone/old"), push.count("/push/alice"))
		}
		r := push.requests("/push/bob")[1]
		if r.Header.Get("Urgency") != "normal" || r.Header.Get("TTL") != "86400" {
			t.Errorf("an alert's Urgency %q TTL %q, want normal, 86400", r.Header.Get("Urgency"), r.Header.Get("TTL"))
		}
	})

	t.Run("the VAPID keys are stored and kept", func(t *testing.T) {
		again, err := e.n.VAPIDPublicKey(ctx)
		if err != nil || again != vapid {
			t.Errorf("second VAPIDPublicKey = %q, %v; want %q", again, err, vapid)
		}
		stored, err := e.st.GetSetting(ctx, notify.SettingVAPIDPublic)
		if err != nil || stored != vapid {
			t.Errorf("stored public key %q, %v", stored, err)
		}
		n2, err := notify.New(e.st, nil, nil, nil, notify.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer n2.Close()
		if k, err := n2.VAPIDPublicKey(ctx); err != nil || k != vapid {
			t.Errorf("a new Notifier on the same store has key %q, %v; want %q", k, err, vapid)
		}
	})

	t.Run("subscriptions are validated and removed", func(t *testing.T) {
		bad := alice.subscription("alice", push.URL+"/push/x")
		bad.Auth = base64.RawURLEncoding.EncodeToString([]byte("short"))
		if err := e.n.Subscribe(ctx, bad); vigil.ErrorCode(err) != vigil.EInvalid {
			t.Errorf("Subscribe(short auth) = %v, want invalid", err)
		}
		bad = alice.subscription("alice", push.URL+"/push/x")
		bad.P256dh = base64.RawURLEncoding.EncodeToString(make([]byte, 65))
		if err := e.n.Subscribe(ctx, bad); vigil.ErrorCode(err) != vigil.EInvalid {
			t.Errorf("Subscribe(bad key) = %v, want invalid", err)
		}
		for _, ep := range []string{"http://192.168.1.1/push/x", "https://192.168.1.1/push/x", "ftp://push.example/x", "https:///x",
			strings.Replace(push.URL, "https:", "http:", 1) + "/push/x", "https://push.example/x"} {
			if err := e.n.Subscribe(ctx, alice.subscription("alice", ep)); vigil.ErrorCode(err) != vigil.EInvalid {
				t.Errorf("Subscribe(%s) = %v, want invalid (https on a push service only)", ep, err)
			}
		}
		if err := e.n.Unsubscribe(ctx, push.URL+"/push/bob", "alice"); vigil.ErrorCode(err) != vigil.EForbidden {
			t.Errorf("alice removing bob's subscription = %v, want forbidden", err)
		}
		if err := e.n.Unsubscribe(ctx, push.URL+"/push/bob", "bob"); err != nil {
			t.Fatal(err)
		}
		if err := e.n.Unsubscribe(ctx, push.URL+"/push/bob", ""); vigil.ErrorCode(err) != vigil.ENotFound {
			t.Errorf("second Unsubscribe = %v, want not found", err)
		}
	})

	priv, err := e.st.GetSetting(ctx, notify.SettingVAPIDPrivate)
	if err != nil {
		t.Fatal(err)
	}
	e.assertNoSecrets(t, priv, "/push/alice", "/push/bob")
}

// A Web Push channel nobody has subscribed to fails its test, but a
// notification on it is no failure: a fresh install has such a channel
// and must not warn about it.
func TestWebPushWithoutSubscriptions(t *testing.T) {
	e := newEnv(t, nil, notify.Options{})
	id := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebPush, Name: "browsers", Enabled: true})
	err := e.n.Test(context.Background(), id)
	if err == nil || !strings.Contains(err.Error(), "no browser") {
		t.Errorf("Test = %v, want no browser subscribed", err)
	}
	e.n.Notify(notify.Notification{Kind: notify.KindIntrusion, Site: "home", Camera: "cam1", Title: "Intrusion at home"})
	testkit.WaitFor(t, 2*time.Second, "the notification to be dispatched", func() bool {
		return strings.Contains(e.log.String(), "no browser is subscribed\" channel=")
	})
	e.n.Close()
	if ds := e.deliveries(t, id); len(ds) != 1 || ds[0].Title != "Vigil test notification" {
		t.Errorf("deliveries %+v: want only the failed test", ds)
	}
	if err := metricIs(e.reg, "vigil_notifications_total", `vigil_notifications_total{kind="webpush",result="failed"} 1`); err != nil {
		t.Errorf("want 1 failure counted (the test): %v", err)
	}
}
