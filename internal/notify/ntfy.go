package notify

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// sendNtfy POSTs the body to an ntfy topic URL, the rest in headers
// (https://docs.ntfy.sh/publish/).
func (n *Notifier) sendNtfy(ctx context.Context, d *delivery) error {
	body := d.n.Body
	if body == "" {
		body = d.n.Title
	}
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if d.n.Title != "" {
		// ntfy decodes RFC 2047 encoded words; ASCII titles pass unchanged.
		h.Set("Title", mime.BEncoding.Encode("utf-8", d.n.Title))
	}
	h.Set("Priority", strconv.Itoa(ntfyPriority(&d.n)))
	if d.n.Kind == KindIntrusion {
		h.Set("Tags", "rotating_light")
	} else {
		h.Set("Tags", "warning")
	}
	if strings.HasPrefix(d.n.URL, "http://") || strings.HasPrefix(d.n.URL, "https://") {
		h.Set("Click", d.n.URL)
	}
	if d.ch.Secret != "" {
		h.Set("Authorization", "Bearer "+d.ch.Secret)
	}
	if err := n.post(ctx, d.ch.URL, []byte(body), h); err != nil {
		return fmt.Errorf("ntfy: %w", err)
	}
	return nil
}

// ntfyPriority maps 0..100 to ntfy's 1 (min) .. 5 (max) in steps of 20;
// intrusions are at least 4 (high).
func ntfyPriority(n *Notification) int {
	p := min(max(1+n.Priority/20, 1), 5)
	if n.Kind == KindIntrusion {
		p = max(p, 4)
	}
	return p
}
