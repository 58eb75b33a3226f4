package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
)

// Webhook request headers.
const (
	HeaderEvent     = "X-Vigil-Event"     // the notification kind
	HeaderDelivery  = "X-Vigil-Delivery"  // a delivery's ID, the same across its retries
	HeaderSignature = "X-Vigil-Signature" // "sha256=" + hex HMAC-SHA256 of the body keyed by the channel secret
)

// Sign returns the X-Vigil-Signature value of a webhook body: receivers
// compute it with their copy of the secret and compare with hmac.Equal.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// sendWebhook POSTs the notification's JSON.
func (n *Notifier) sendWebhook(ctx context.Context, d *delivery) error {
	body, err := json.Marshal(d.n)
	if err != nil {
		return permanent(fmt.Errorf("encode webhook body: %w", err))
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderEvent, d.n.Kind)
	h.Set(HeaderDelivery, d.id)
	if d.ch.Secret != "" {
		h.Set(HeaderSignature, Sign(d.ch.Secret, body))
	}
	if err := n.post(ctx, d.ch.URL, body, h); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}
