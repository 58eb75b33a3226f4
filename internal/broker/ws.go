package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/vigilhq/vigil/internal/wsconn"
)

// websocketListener serves MQTT over WebSocket on a listener that is already
// bound. mochi's own WebSocket listener binds inside Serve, in a goroutine,
// where a port in use could not fail start-up and port 0 could not be
// reported; this one takes a bound net.Listener like mochi's Net listener.
type websocketListener struct {
	id        string
	ln        net.Listener
	srv       *http.Server
	upgrader  websocket.Upgrader
	establish listeners.EstablishFn // set by Serve before it accepts
	log       *slog.Logger
	once      sync.Once
}

// newWebsocket serves MQTT over WebSocket on ln to clients that send no
// Origin (not browsers) and to pages of the allowed origins: a page that
// any site opens in a browser on the Vigil host must not reach a broker
// that trusts loopback.
func newWebsocket(id string, ln net.Listener, origins []string) *websocketListener {
	l := &websocketListener{
		id: id,
		ln: ln,
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			CheckOrigin: func(r *http.Request) bool {
				o := r.Header.Get("Origin")
				return o == "" || slices.ContainsFunc(origins, func(a string) bool { return strings.EqualFold(a, o) })
			},
		},
	}
	l.srv = &http.Server{Handler: http.HandlerFunc(l.upgrade), ReadHeaderTimeout: 10 * time.Second}
	return l
}

func (l *websocketListener) upgrade(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered the client
	}
	defer c.Close()
	if err := l.establish(l.id, wsconn.New(c)); err != nil {
		l.log.Debug("websocket client ended", "error", err)
	}
}

func (l *websocketListener) ID() string       { return l.id }
func (l *websocketListener) Address() string  { return l.ln.Addr().String() }
func (l *websocketListener) Protocol() string { return "ws" }

func (l *websocketListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *websocketListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener failed", "error", err)
	}
}

func (l *websocketListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l.srv.Shutdown(ctx)
		l.ln.Close()
	})
	closeClients(l.id)
}
