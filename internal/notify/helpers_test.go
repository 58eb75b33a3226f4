package notify_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/testkit"
)

// env is a Notifier on a real SQLite store, with its registry and log.
type env struct {
	n     *notify.Notifier
	st    *store.Store
	reg   *prometheus.Registry
	log   *testkit.Buffer
	clock *testkit.Clock
}

// newEnv opens a store and starts a Notifier with short retries, an
// injected clock (noon local time), base URL https://vigil.example and,
// unless opts say otherwise, loopback allowed (notify.allow_targets) for
// the receivers.
func newEnv(t *testing.T, pub notify.Publisher, opts notify.Options) *env {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, reg: prometheus.NewRegistry(), log: &testkit.Buffer{},
		clock: testkit.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.Local))}
	if opts.Retry == nil {
		opts.Retry = []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
	}
	if opts.Now == nil {
		opts.Now = e.clock.Now
	}
	if opts.BaseURL == "" {
		opts.BaseURL = "https://vigil.example"
	}
	if opts.AllowTargets == nil {
		opts.AllowTargets = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	log := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.n, err = notify.New(st, pub, log, e.reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.n.Start()
	t.Cleanup(func() { e.n.Close() }) // runs before the store's Close
	return e
}

// addChannel saves a channel and returns its ID.
func (e *env) addChannel(t *testing.T, c notify.Channel) string {
	t.Helper()
	if err := e.st.SaveChannel(context.Background(), &c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// deliveries returns a channel's delivery log, newest first.
func (e *env) deliveries(t *testing.T, channelID string) []notify.Delivery {
	t.Helper()
	ds, err := e.st.ListDeliveries(context.Background(), channelID, 100)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// metricHelp is the HELP and TYPE lines of each metric the tests read.
var metricHelp = map[string]string{
	"vigil_notifications_total": `# HELP vigil_notifications_total Notification deliveries by channel kind (webpush, ntfy, webhook, mqtt) and result (ok, failed).
# TYPE vigil_notifications_total counter`,
	"vigil_notifications_suppressed_total": `# HELP vigil_notifications_suppressed_total Notifications a channel's rules kept back, by reason (min_priority, quiet_hours, cooldown).
# TYPE vigil_notifications_suppressed_total counter`,
	"vigil_notifications_dropped_total": `# HELP vigil_notifications_dropped_total Notifications dropped before reaching any channel: queue full, channels unreadable or shutting down.
# TYPE vigil_notifications_dropped_total counter`,
}

// metricIs returns nil if the metric name in reg has exactly the given
// series, each a line of the text exposition format (for example
// `vigil_notifications_total{kind="ntfy",result="ok"} 3`), and otherwise
// an error that shows the difference.
func metricIs(reg prometheus.Gatherer, name string, series ...string) error {
	want := metricHelp[name] + "\n" + strings.Join(series, "\n") + "\n"
	return testutil.GatherAndCompare(reg, strings.NewReader(want), name)
}

// assertNoSecrets fails if the log holds any of the secrets.
func (e *env) assertNoSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	e.n.Close()
	logged := e.log.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(logged, s) {
			t.Errorf("the log holds the secret %q:\n%s", s, logged)
		}
	}
}

// request is what a receiver got.
type request struct {
	Path   string
	Header http.Header
	Body   []byte
}

// receiver is an HTTP server on loopback that records requests and
// answers with status(n, request), n counting from 1 per path.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []request
	status func(n int, r request) int
}

func newReceiver(t *testing.T, status func(n int, r request) int) *receiver {
	t.Helper()
	return startReceiver(t, status, httptest.NewServer)
}

// newTLSReceiver is a receiver over https (a push service); its Client
// trusts its certificate.
func newTLSReceiver(t *testing.T, status func(n int, r request) int) *receiver {
	t.Helper()
	return startReceiver(t, status, httptest.NewTLSServer)
}

func startReceiver(t *testing.T, status func(n int, r request) int, start func(http.Handler) *httptest.Server) *receiver {
	t.Helper()
	rc := &receiver{status: status}
	rc.Server = start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := request{Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, req)
		n := 0
		for _, q := range rc.reqs {
			if q.Path == req.Path {
				n++
			}
		}
		rc.mu.Unlock()
		code := http.StatusOK
		if rc.status != nil {
			code = rc.status(n, req)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// requests returns the requests to a path ("" = all).
func (rc *receiver) requests(path string) []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []request
	for _, r := range rc.reqs {
		if path == "" || r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (rc *receiver) count(path string) int { return len(rc.requests(path)) }
