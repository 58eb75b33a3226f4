// Package wsconn carries MQTT over WebSocket: binary messages presented as
// one net.Conn byte stream, for the broker's listener and for clients that
// need a raw connection (the audit's probes).
package wsconn

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Conn presents a WebSocket connection carrying binary MQTT frames as a
// net.Conn stream.
type Conn struct {
	net.Conn
	c  *websocket.Conn
	r  io.Reader  // current message, nil between messages
	wm sync.Mutex // a WebSocket takes one writer at a time
}

// New wraps an established WebSocket connection.
func New(c *websocket.Conn) *Conn { return &Conn{Conn: c.NetConn(), c: c} }

// ErrNotBinary is returned when the peer sends a text message.
var ErrNotBinary = errors.New("websocket: MQTT needs binary messages")

func (ws *Conn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, ErrNotBinary
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue // an empty or finished message: read the next one
			}
			err = nil
		}
		return n, err
	}
}

func (ws *Conn) Write(p []byte) (int, error) {
	ws.wm.Lock()
	defer ws.wm.Unlock()
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the WebSocket connection.
func (ws *Conn) Close() error { return ws.c.Close() }

// SetWriteDeadline bounds the writes: through the WebSocket, which sets
// the socket's write deadline itself for each message (to none unless told).
func (ws *Conn) SetWriteDeadline(t time.Time) error { return ws.c.SetWriteDeadline(t) }

// SetReadDeadline bounds the reads.
func (ws *Conn) SetReadDeadline(t time.Time) error { return ws.c.SetReadDeadline(t) }

// SetDeadline bounds reads and writes.
func (ws *Conn) SetDeadline(t time.Time) error {
	return errors.Join(ws.c.SetReadDeadline(t), ws.c.SetWriteDeadline(t))
}

// Dial opens an MQTT-over-WebSocket connection to a ws:// or wss:// URL
// (subprotocol "mqtt"); tlsConfig is used for wss.
func Dial(ctx context.Context, u *url.URL, tlsConfig *tls.Config) (*Conn, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: tlsConfig}
	c, resp, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		return nil, resp, err
	}
	return New(c), resp, nil
}
