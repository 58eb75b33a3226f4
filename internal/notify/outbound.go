package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/vigilhq/vigil"
)

// DefaultPushServices are the hosts of the push services browsers use:
// FCM (Chrome, Opera, Brave, Samsung Internet), Mozilla's (Firefox),
// Apple's (Safari) and WNS (Edge). notify.push_services in vigil.yaml.
var DefaultPushServices = []string{"fcm.googleapis.com", "updates.push.services.mozilla.com", "web.push.apple.com", "*.notify.windows.com"}

// AnyTarget allows every address: for commands whose notification URLs
// come from the person at the terminal (vigil watch --webhook), not from
// a web user.
var AnyTarget = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// refusedError is a target address the outbound rules refuse.
type refusedError struct {
	addr netip.Addr
	why  string // loopback, link-local, unspecified, multicast
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("%s is a %s address, where Vigil sends no notifications unless notify.allow_targets lists it", e.addr, e.why)
}

// outbound holds the rules for the addresses notification requests may
// reach.
type outbound struct {
	allow []netip.Prefix // refused kinds of address allowed anyway
}

// check returns a *refusedError if ip may not be reached.
func (o outbound) check(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	for _, p := range o.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	why := ""
	switch {
	case ip.IsLoopback():
		why = "loopback"
	case ip.IsLinkLocalUnicast():
		why = "link-local"
	case ip.IsUnspecified(), ip.Is4() && ip.As4()[0] == 0: // 0.0.0.0/8 reaches this host on Linux
		why = "unspecified"
	case ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "multicast"
	}
	if why != "" {
		return &refusedError{addr: ip, why: why}
	}
	return nil
}

// control is the net.Dialer's Control: it sees the address each
// connection really goes to, after name resolution, so that a name that
// resolves differently now than when the channel was saved (DNS
// rebinding) is caught too.
func (o outbound) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("outbound address %q: %w", address, err)
	}
	return o.check(ap.Addr())
}

// checkURL checks a channel's or a subscription's URL before it is saved:
// an address in it, or "localhost", and the addresses its name resolves
// to now. A name that does not resolve now passes: the dial checks again.
func (o outbound) checkURL(ctx context.Context, u *url.URL) error {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		return o.check(ip)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return o.check(netip.IPv6Loopback()) // RFC 6761: always loopback
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if err := o.check(ip); err != nil {
			return fmt.Errorf("%s resolves to %w", host, err)
		}
	}
	return nil
}

// newClient returns the client notifications are sent with: base's
// settings (nil: a 10 s timeout, no redirects) on a copy of its transport
// whose dialer applies the outbound rules. It uses no proxy: a proxy would
// connect on Vigil's behalf to addresses the rules cannot see.
func (o outbound) newClient(base *http.Client) (*http.Client, error) {
	c := &http.Client{
		Timeout: 10 * time.Second,
		// A redirected POST becomes a GET, and a webhook that moved
		// should be reconfigured, not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if base != nil {
		*c = *base
	}
	var t *http.Transport
	switch bt := c.Transport.(type) {
	case nil:
		t = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		t = bt.Clone()
	default:
		return nil, errors.New("notify: the HTTP client's transport must be an *http.Transport")
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: o.control}
	t.Proxy = nil
	t.DialContext, t.DialTLSContext = d.DialContext, nil
	//lint:ignore SA1019 a caller's deprecated dial hooks would bypass the rules
	t.Dial, t.DialTLS = nil, nil
	c.Transport = t
	return c, nil
}

// CheckChannel applies the outbound rules to an ntfy or webhook channel's
// URL before it is saved: a vigil.EInvalid error if it targets a refused
// address. Other kinds pass.
func (n *Notifier) CheckChannel(ctx context.Context, c *Channel) error {
	if c.Kind != ChannelNtfy && c.Kind != ChannelWebhook {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return vigil.Errorf(vigil.EInvalid, "channel URL: want an http or https URL")
	}
	if err := n.out.checkURL(ctx, u); err != nil {
		return vigil.Errorf(vigil.EInvalid, "channel URL: %v", err)
	}
	return nil
}

// matchHost reports whether host is one of patterns: a name, an address,
// or "*." and a domain that host is under.
func matchHost(host string, patterns []string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, p := range patterns {
		p = strings.ToLower(p)
		if domain, ok := strings.CutPrefix(p, "*."); ok {
			if strings.HasSuffix(host, "."+domain) {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}
