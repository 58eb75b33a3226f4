package e2e_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/sim"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// artifacts is where browser tests leave their screenshots:
// $VIGIL_ARTIFACTS, else testdata/artifacts (ignored by git).
func artifacts(t testing.TB) string {
	dir := os.Getenv("VIGIL_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	dir = filepath.Join(dir, t.Name())
	must(t, os.RemoveAll(dir)) // this run's screenshots only
	must(t, os.MkdirAll(dir, 0o755))
	return dir
}

// browser is a headless Chromium driven over the DevTools protocol.
type chrome struct {
	t    testing.TB
	ctx  context.Context
	base string
	dir  string
	shot int
}

func newChrome(t testing.TB, base string) *chrome {
	t.Helper()
	exe := testpeer.Need(t, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf), chromedp.WithErrorf(func(f string, args ...any) {
		// This chromedp does not know every event of a newer Chromium
		// (top-layer updates of <dialog>); those are harmless.
		if msg := fmt.Sprintf(f, args...); !strings.Contains(msg, "unhandled node event") {
			t.Logf("chromedp: %s", msg)
		}
	}))
	t.Cleanup(cancel2)
	c := &chrome{t: t, ctx: ctx, base: base, dir: artifacts(t)}
	// The first Run starts the browser, which lives as long as that Run's
	// context: it must be c.ctx itself, not one with a deadline.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return c
}

// run runs actions with a deadline, failing the test with what it was
// doing.
func (c *chrome) run(what string, actions ...chromedp.Action) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		c.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
		c.t.Fatalf("%s: %v", what, err)
	}
}

// screenshot saves the whole page as NN-name.png.
func (c *chrome) screenshot(name string) {
	c.t.Helper()
	var png []byte
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		c.t.Logf("screenshot %s: %v", name, err)
		return
	}
	c.shot++
	p := filepath.Join(c.dir, fmt.Sprintf("%02d-%s.png", c.shot, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		c.t.Logf("screenshot %s: %v", name, err)
	}
}

func awaitPromise(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }

// waitJS waits until a JavaScript condition is true.
func (c *chrome) waitJS(what, cond string, timeout time.Duration) {
	c.t.Helper()
	var err error
	defer func() {
		if c.t.Failed() {
			c.screenshot("timeout-" + strings.ReplaceAll(what, " ", "-"))
			c.t.Logf("%s (%s): last error %v", what, cond, err)
		}
	}()
	testkit.WaitFor(c.t, timeout, what, func() bool {
		var ok bool
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		err = chromedp.Run(ctx, chromedp.Evaluate(cond, &ok))
		return err == nil && ok
	})
}

func (c *chrome) login(user, password string) {
	c.t.Helper()
	c.run("log in as "+user,
		chromedp.Navigate(c.base+"/"),
		chromedp.WaitVisible("#login-form"),
		chromedp.SendKeys("#username", user),
		chromedp.SendKeys("#password", password),
	)
	c.screenshot("login-" + user)
	c.run("submit the login form", chromedp.Click("#login-submit"))
	// The page navigates: a query begun on the login page may never see
	// the next one (seen in CI), so the next page is polled for.
	c.waitJS("the overview after logging in", `document.querySelector('#sites') !== null && document.querySelector('.who .user') !== null`, 30*time.Second)
	var who string
	c.run("read who is logged in", chromedp.Evaluate(`document.querySelector('.who .user')?.textContent || ''`, &who))
	if !strings.HasPrefix(who, user) {
		c.t.Fatalf("logged in as %q, want %s", who, user)
	}
}

// TestTheWebUIInChromium drives the UI in headless Chromium as an owner
// would: log in, watch a device's value change live, see an intrusion
// from the simulator appear without reloading, play its clip to the end,
// open live view and see frames arrive, check that a viewer cannot arm or
// disarm, and log out. Screenshots of each step are kept as artefacts.
func TestTheWebUIInChromium(t *testing.T) {
	ta := startApp(t, func(c *conf.Config) {
		intrusionConfig(t, c)
		c.Recording.ClipSeconds = 3
		c.Recording.PreRollSeconds = 1
	})
	addUser(t, ta, "olivia", "viewer", "olivia-pass-1", nil, nil)
	sc := sim.NewScenario()
	sc.Brokers = []string{ta.mqttAddr()}
	sc.Fleets = []sim.Fleet{
		{Name: "temps", Site: "home", Type: sim.TypeTemperature, Count: 1, Period: 400 * time.Millisecond},
		{Name: "cams", Site: "home", Type: sim.TypeCamera, Count: 1, Period: 500 * time.Millisecond,
			Camera: sim.CameraConfig{Width: 320, Height: 240, FPS: 8, Quality: 60, PreRoll: time.Second}},
	}
	sc.ApplyDefaults()
	s, err := sim.New(sc, ta.log)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var temp, cam string
	testkit.WaitFor(t, 20*time.Second, "the fleet and an agent", func() bool {
		temp, cam = "", ""
		for _, d := range ta.devices(t) {
			switch {
			case d.Type == "temperature" && d.LastValue != nil:
				temp = d.ID
			case d.Meta.Has(telemetry.CapCamera):
				cam = d.ID
			}
		}
		v := ta.view(t)
		return temp != "" && cam != "" && liveAgents(v) == 1 && v.Agents[0].Status == "ready"
	})

	c := newChrome(t, "http://"+ta.HTTP.Addr().String())
	c.login("admin", adminPassword)
	c.screenshot("overview")

	// A device's value changes live on its page (no reload: a marker set
	// in the page survives).
	var first string
	c.run("open the device page",
		chromedp.Navigate(c.base+"/devices/"+temp),
		chromedp.WaitVisible("#last-value"),
		chromedp.Evaluate(`window.marker = 1`, nil),
	)
	c.waitJS("a first value", `document.getElementById('last-value').textContent !== '–'`, 10*time.Second)
	c.run("read the value", chromedp.Text("#last-value", &first))
	c.waitJS("the value to change", fmt.Sprintf(`document.getElementById('last-value').textContent !== %q && window.marker === 1`, first), 15*time.Second)
	c.waitJS("the live chart", `document.querySelector('#chart svg path.s0') !== null`, 5*time.Second)
	c.screenshot("device-live")

	// An intrusion in the simulator shows up on the events page without
	// a reload.
	c.run("open the events page", chromedp.Navigate(c.base+"/events"), chromedp.WaitVisible("#timeline"), chromedp.Evaluate(`window.marker = 2`, nil))
	c.waitJS("the events page's live stream", `document.getElementById('live-status').classList.contains('on')`, 10*time.Second)
	if n := s.Apply(sim.Step{Fleet: "cams", Action: "intrusion", Fraction: 1, Duration: 2 * time.Second, DistanceM: 0.5}); n != 1 {
		t.Fatalf("the intrusion reached %d cameras", n)
	}
	c.waitJS("the event to appear", `document.querySelectorAll('#timeline li.event').length === 1 && window.marker === 2`, 15*time.Second)
	c.screenshot("event-appears")
	c.waitJS("its clip to be ready", `document.querySelector('#timeline .clip:not([disabled])') !== null && window.marker === 2`, 40*time.Second)
	c.screenshot("clip-ready")

	// Play the clip to its end.
	c.run("open the clip", chromedp.Click("#timeline .clip:not([disabled])"), chromedp.WaitVisible("#player-video"))
	c.waitJS("the clip to play", `document.getElementById('player-video').currentTime > 0.5`, 15*time.Second)
	c.screenshot("clip-playing")
	c.waitJS("the clip to end", `document.getElementById('player-video').ended`, 20*time.Second)
	var dur float64
	c.run("read the clip's length", chromedp.Evaluate(`document.getElementById('player-video').duration`, &dur))
	if dur < 2.5 || dur > 6 {
		t.Errorf("the clip played %.1f s; want about 3 s plus the pre-roll", dur)
	}
	c.run("close the player", chromedp.Click("#player .player-head button"))

	// Live view: frames arrive.
	c.run("open live view", chromedp.Navigate(c.base+"/live/home/"+cam), chromedp.WaitVisible(".cam"))
	c.waitJS("frames", `+(document.querySelector('.cam').dataset.frames || 0) >= 10`, 30*time.Second)
	var width int
	c.run("read the picture's width", chromedp.Evaluate(`document.querySelector('.cam img').naturalWidth`, &width))
	if width != 320 {
		t.Errorf("live picture is %d pixels wide, want 320", width)
	}
	c.screenshot("live-view")
	c.run("stop watching", chromedp.Click(".cam .bar button"))

	// The agents page charts the pool over time.
	c.run("open the agents page", chromedp.Navigate(c.base+"/agents"), chromedp.WaitVisible("#history-chart"))
	c.waitJS("the history chart", `document.querySelector('#history-chart path.s0') !== null && document.querySelectorAll('#decisions tbody tr').length >= 3`, 10*time.Second)
	// This one node is listed, up and coordinating, with its agents.
	c.waitJS("the nodes", `(() => { const r = document.querySelectorAll('#nodes tbody tr[data-node]'); return r.length === 1 && r[0].textContent.includes('coordinator') && r[0].textContent.includes('up') && /\d/.test(r[0].cells[4].textContent); })()`, 10*time.Second)
	c.screenshot("agents")

	// The security page runs an audit of vigil up's own broker and shows
	// its grade and findings; local mode is explained.
	c.run("open the security page", chromedp.Navigate(c.base+"/security"), chromedp.WaitVisible("#run-audit"))
	c.run("run an audit", chromedp.Click("#run-audit"))
	c.waitJS("the audit's grade", `document.querySelector('#audit-summary .grade') !== null`, 40*time.Second)
	c.waitJS("local mode explained", `[...document.querySelectorAll('#findings .finding')].some(f => f.dataset.check === 'anonymous-access' && f.textContent.includes('loopback only'))`, 5*time.Second)
	c.screenshot("security")

	// Every page works on a phone (nothing wider than the screen) and
	// labels its controls and pictures.
	c.run("phone-sized window", chromedp.EmulateViewport(390, 844))
	for _, p := range []struct{ path, name string }{{"/", "overview"}, {"/devices", "devices"}, {"/devices/" + temp, "device"},
		{"/events", "events"}, {"/live", "live"}, {"/agents", "agents"}, {"/security", "security"}, {"/settings", "settings"}} {
		c.run("open "+p.path, chromedp.Navigate(c.base+p.path), chromedp.WaitVisible("#main"))
		c.waitJS("the page's first API answers", `document.documentElement.dataset.inflight === '0'`, 10*time.Second)
		var problems []string
		c.run("check "+p.path, chromedp.Evaluate(`(() => {
			const out = [];
			if (document.documentElement.scrollWidth > innerWidth + 1) out.push('page is ' + document.documentElement.scrollWidth + 'px wide');
			for (const e of document.querySelectorAll('input, select, textarea, button')) {
				if (e.type === 'hidden' || e.closest('[hidden]')) continue;
				if (!(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()) out.push('unlabelled ' + e.outerHTML.slice(0, 80));
			}
			for (const i of document.querySelectorAll('img')) if (!i.hasAttribute('alt')) out.push('img without alt ' + i.src);
			return out;
		})()`, &problems))
		if len(problems) > 0 {
			t.Errorf("%s: %v", p.path, problems)
		}
		c.screenshot("phone-" + p.name)
	}
	c.run("desktop-sized window", chromedp.EmulateViewport(1280, 900))

	// Log out; pages then need a login again.
	c.run("log out", chromedp.Click("#logout"), chromedp.WaitVisible("#login-form"))
	c.run("open a page after logout", chromedp.Navigate(c.base+"/settings"), chromedp.WaitVisible("#login-form"))
	var loc string
	c.run("read the location", chromedp.Location(&loc))
	if !strings.HasSuffix(loc, "/login?next=%2Fsettings") {
		t.Errorf("after logout /settings went to %s", loc)
	}
	c.screenshot("logged-out")

	// A viewer sees the sites but cannot arm or disarm: the control is
	// disabled, and the API refuses the request even with a good session.
	c.login("olivia", "olivia-pass-1")
	c.waitJS("the sites", `document.querySelector('#sites li[data-site="home"]') !== null`, 10*time.Second)
	var disabled bool
	c.run("look at the arm control", chromedp.Evaluate(`document.querySelector('#sites li[data-site="home"] button').disabled`, &disabled))
	if !disabled {
		t.Error("a viewer's arm/disarm button is enabled")
	}
	var status int
	c.run("try to disarm through the API", chromedp.Evaluate(`fetch('/api/v1/sites/home/disarm', {method: 'POST',
		headers: {'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]').content}}).then(r => r.status)`, &status,
		awaitPromise))
	if status != 403 {
		t.Errorf("a viewer's disarm request: %d, want 403", status)
	}
	var armed bool
	var sites []struct{ Armed bool }
	ta.api(t, "GET", "/api/v1/sites", "admin", adminPassword, &sites)
	for _, st := range sites {
		armed = st.Armed
	}
	if !armed {
		t.Error("the viewer disarmed the site")
	}
	c.screenshot("viewer-overview")
	c.run("viewer logs out", chromedp.Click("#logout"), chromedp.WaitVisible("#login-form"))
}

// BenchmarkLiveViewInChromium measures live view from camera to screen: a
// camera sends numbered frames at 10 fps, and the live page in headless
// Chromium notes when each is decoded and shown (its "frame" event). The
// latency is that moment minus the send time (one clock, this host):
// go test -run '^$' -bench LiveViewInChromium ./internal/e2e
func BenchmarkLiveViewInChromium(b *testing.B) {
	ta := startApp(b, func(c *conf.Config) { intrusionConfig(b, c) })
	cam := newManualCamera(b, ta, "home", "door")
	testkit.WaitFor(b, 20*time.Second, "an agent and the camera", func() bool {
		var cs []struct{ ID string }
		ta.api(b, "GET", "/api/v1/cameras", "admin", adminPassword, &cs)
		v := ta.view(b)
		return liveAgents(v) == 1 && v.Agents[0].Status == "ready" && len(cs) == 1
	})
	c := newChrome(b, "http://"+ta.HTTP.Addr().String())
	c.login("admin", adminPassword)
	const frames = 50
	var all []time.Duration
	for b.Loop() {
		c.run("open live view", chromedp.Navigate(c.base+"/live/home/door"), chromedp.WaitVisible(".cam"),
			chromedp.Evaluate(`window.shown = []; document.querySelector('.cam').addEventListener('frame', () => window.shown.push(Date.now()))`, nil))
		cmd := cam.command(b)
		sent := sendFrames(b, cmd, frames, 10)
		var shown []float64
		testkit.WaitFor(b, 5*time.Second, fmt.Sprintf("the page to show %d frames", frames), func() bool {
			c.run("read the frame times", chromedp.Evaluate(`window.shown`, &shown))
			return len(shown) >= frames
		})
		if len(shown) != frames {
			b.Fatalf("the page showed %d frames, %d were sent", len(shown), frames)
		}
		for i, ms := range shown {
			all = append(all, time.UnixMilli(int64(ms)).Sub(sent[i]))
		}
		c.run("leave the page", chromedp.Navigate("about:blank"))
		s, err := media.NewSender(cmd.Host, cmd.Port, cmd.SSRC, 0)
		must(b, err)
		s.Bye("done")
		testkit.WaitFor(b, 30*time.Second, "the live stream to end", func() bool { return len(ta.view(b).Streams) == 0 })
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(all[len(all)*95/100].Microseconds())/1000, "ms-p95")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "ms-max")
}

// TestLoginStaysOnTheSite: whatever the login page's ?next= holds, the
// browser lands on Vigil after logging in, never on another host.
func TestLoginStaysOnTheSite(t *testing.T) {
	ta := startApp(t, nil)
	c := newChrome(t, "http://"+ta.HTTP.Addr().String())
	for _, tc := range []struct{ next, want string }{
		{"/events?site=home", "/events?site=home"},
		{"/.//evil.example/x", ""},
		{"/./\\evil.example/x", ""},
		{"/a/..//evil.example/x", ""},
		{"//evil.example/x", "/"},
		{"/\\evil.example/x", "/"},
		{"https://evil.example/x", "/"},
		{"javascript:alert(1)", "/"},
	} {
		t.Run("next="+tc.next, func(t *testing.T) {
			c.run("log out", network.ClearBrowserCookies(),
				chromedp.Navigate(c.base+"/login?next="+url.QueryEscape(tc.next)), chromedp.WaitVisible("#login-form"),
				chromedp.SendKeys("#username", "admin"), chromedp.SendKeys("#password", adminPassword), chromedp.Click("#login-submit"))
			var loc string
			testkit.WaitFor(t, 10*time.Second, "to leave the login page", func() bool {
				// Read while the page navigates, the location may fail:
				// read again.
				return chromedp.Run(c.ctx, chromedp.Location(&loc)) == nil && !strings.Contains(loc, "/login")
			})
			if !strings.HasPrefix(loc, c.base+"/") || (tc.want != "" && loc != c.base+tc.want) {
				t.Errorf("after login with next=%s the browser is at %s, want %s%s", tc.next, loc, c.base, tc.want)
			}
		})
	}
}
