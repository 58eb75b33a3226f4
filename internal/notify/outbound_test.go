package notify_test

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/store"
)

// TestRefusedTargetsAreCheckedAtDialTime: a channel whose host resolves to
// loopback when Vigil connects (a name that pointed elsewhere when it was
// saved, DNS rebinding, or a channel stored before the rules) gets nothing,
// without notify.allow_targets.
func TestRefusedTargetsAreCheckedAtDialTime(t *testing.T) {
	rc := newReceiver(t, nil)
	u, _ := url.Parse(rc.URL)
	_, port, _ := net.SplitHostPort(u.Host)
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n, err := notify.New(st, nil, nil, nil, notify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for _, tc := range []struct{ name, url string }{
		{"a host name that resolves to loopback", "http://localhost:" + port + "/hook"},
		{"a loopback address stored before the rules", rc.URL + "/hook"},
	} {
		for _, kind := range []string{notify.ChannelWebhook, notify.ChannelNtfy} {
			t.Run(kind+" to "+tc.name+" is refused", func(t *testing.T) {
				ch := notify.Channel{Kind: kind, Name: tc.name, Enabled: true, URL: tc.url}
				if err := st.SaveChannel(context.Background(), &ch); err != nil {
					t.Fatal(err)
				}
				err := n.Test(context.Background(), ch.ID)
				if err == nil || !strings.Contains(err.Error(), "loopback") {
					t.Errorf("Test = %v, want refused as loopback", err)
				}
			})
		}
	}
	if got := rc.count(""); got != 0 {
		t.Errorf("the receiver got %d requests, want none", got)
	}

	t.Run("notify.allow_targets lets them through", func(t *testing.T) {
		e := newEnv(t, nil, notify.Options{AllowTargets: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}})
		id := e.addChannel(t, notify.Channel{Kind: notify.ChannelWebhook, Name: "local", Enabled: true, URL: "http://localhost:" + port + "/hook"})
		if err := e.n.Test(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		if got := rc.count("/hook"); got != 1 {
			t.Errorf("the receiver got %d requests, want 1", got)
		}
	})
}

func TestCheckChannelRefusesLocalTargets(t *testing.T) {
	st := notify.NewMemStore()
	strict, err := notify.New(st, nil, nil, nil, notify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	open, err := notify.New(st, nil, nil, nil, notify.Options{AllowTargets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	for _, tc := range []struct {
		url            string
		strict, opened bool // accepted without and with loopback allowed
	}{
		{"http://127.0.0.1:8080/api/v1/sites/home/disarm", false, true},
		{"http://127.9.9.9/x", false, true},
		{"http://[::1]:2586/alerts", false, true},
		{"http://[::ffff:127.0.0.1]/x", false, true},
		{"http://localhost:2586/alerts", false, true},
		{"http://LOCALHOST./alerts", false, true},
		{"http://ntfy.localhost/alerts", false, true},
		{"http://169.254.169.254/latest/meta-data/", false, false},
		{"http://[fe80::1%25eth0]/x", false, false},
		{"http://0.0.0.0:8080/x", false, false},
		{"http://0.1.2.3/x", false, false},
		{"http://[::]:8080/x", false, false},
		{"http://224.0.0.251/x", false, false},
		{"http://255.255.255.255/x", false, false},
		{"http://192.168.1.10:8123/api/webhook/x", true, true},
		{"http://10.0.0.5/x", true, true},
		{"http://[fd00::5]/x", true, true},
		{"https://ntfy.sh/vigil", true, true},
		{"https://hooks.invalid/x", true, true}, // does not resolve: the dial checks
	} {
		for _, c := range []struct {
			n    *notify.Notifier
			name string
			want bool
		}{{strict, "by default", tc.strict}, {open, "with loopback allowed", tc.opened}} {
			verdict := map[bool]string{true: "accepted", false: "refused"}[c.want]
			t.Run(tc.url+" is "+verdict+" "+c.name, func(t *testing.T) {
				err := c.n.CheckChannel(context.Background(), &notify.Channel{Kind: notify.ChannelNtfy, URL: tc.url})
				if (err == nil) != c.want {
					t.Errorf("CheckChannel = %v", err)
				}
				if err != nil && vigil.ErrorCode(err) != vigil.EInvalid {
					t.Errorf("CheckChannel = %v, want an invalid error", err)
				}
			})
		}
	}
}
