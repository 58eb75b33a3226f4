package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/vigilhq/vigil/internal/version"
)

// post sends body to target and checks the answer. Its errors never carry
// the URL, which may hold a token (ntfy topics, webhook paths).
func (n *Notifier) post(ctx context.Context, target string, body []byte, h http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return permanent(fmt.Errorf("new request: %w", stripURL(err)))
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "Vigil/"+version.Version)
	resp, err := n.client.Do(req)
	if err != nil {
		if refused := (*refusedError)(nil); errors.As(err, &refused) {
			return permanent(fmt.Errorf("post: %w", refused))
		}
		return fmt.Errorf("post: %w", stripURL(err))
	}
	defer resp.Body.Close()
	return checkStatus(resp)
}

// statusError is a non-2xx answer.
type statusError struct {
	code int
	body string // the start of the answer, printable characters only
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("status %d %s", e.code, http.StatusText(e.code))
	if e.body != "" {
		s += ": " + e.body
	}
	return s
}

// checkStatus reads and judges an answer: 2xx is success; 3xx and 4xx
// (but 408, 425 and 429) will not get better by retrying.
func checkStatus(resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	err := &statusError{code: resp.StatusCode, body: printable(string(b))}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooEarly, resp.StatusCode == http.StatusTooManyRequests:
		return err
	case resp.StatusCode >= 300 && resp.StatusCode < 500:
		return permanent(err)
	}
	return err
}

// stripURL replaces a *url.Error, whose message quotes the URL, with its
// operation and cause.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

// printable keeps the printable characters of s, spaces collapsed.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	return strings.Join(strings.Fields(s), " ")
}
