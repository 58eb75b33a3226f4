package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/app"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/testkit"
	"github.com/vigilhq/vigil/internal/testpeer"
)

// vigil runs the CLI in-process and returns its exit code and output.
func vigil(t *testing.T, ctx context.Context, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb testkit.Buffer
	code := run(ctx, args, stdio{in: strings.NewReader(stdin), out: &out, err: &errb}, []string{"HOME=/nonexistent"})
	return code, out.String(), errb.String()
}

func TestEveryCommandHasHelpWithExamples(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			code, out, _ := vigil(t, context.Background(), "", c.name, "--help")
			_, examples, _ := strings.Cut(out, "\nExamples:\n")
			if code != 0 || !strings.Contains(examples, "vigil "+c.name) || !strings.Contains(out, "Usage: vigil "+c.name) {
				t.Errorf("vigil %s --help: exit %d\n%s", c.name, code, out)
			}
		})
	}
	if code, out, _ := vigil(t, context.Background(), "", "help"); code != 0 || !strings.Contains(out, "Quick start") {
		t.Errorf("vigil help: %d %s", code, out)
	}
	if code, _, errOut := vigil(t, context.Background(), "", "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %s", code, errOut)
	}
	if code, _, errOut := vigil(t, context.Background(), "", "sim", "--qos", "7"); code != 2 || !strings.Contains(errOut, "qos: 7") {
		t.Errorf("bad flag value: %d %s", code, errOut)
	}
}

func TestUpRejectsAWrongConfigKeyByName(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vigil.yaml")
	os.WriteFile(p, []byte("http:\n  listn: 127.0.0.1:0\n"), 0o600)
	code, _, errOut := vigil(t, context.Background(), "", "up", "--config", p)
	if code != 1 || !strings.Contains(errOut, `unknown key "http.listn" (did you mean "http.listen"?)`) {
		t.Errorf("exit %d: %s", code, errOut)
	}
	code, _, errOut = vigil(t, context.Background(), "", "up", "--http-listen", "nowhere")
	if code != 1 || !strings.Contains(errOut, "http.listen") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

func TestUpRunsUntilInterruptedAndExitsZero(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb testkit.Buffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"up", "--data-dir", dir, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"},
			stdio{in: strings.NewReader(""), out: &out, err: &errb}, []string{"VIGIL_MQTT_WS_LISTEN=127.0.0.1:0", "VIGIL_AUTH_BCRYPT_COST=4"})
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vigil up's log:\n%s", errb.String())
		}
	})
	testkit.WaitFor(t, 20*time.Second, "vigil up to start", func() bool { return strings.Contains(errb.String(), "vigil is up") })
	// Port 0 was replaced by a real port in the log.
	if !regexp.MustCompile(`msg="mqtt listening" component=broker listener=tcp addr=127\.0\.0\.1:[1-9][0-9]*`).MatchString(errb.String()) {
		t.Errorf("the chosen MQTT port is not logged:\n%s", errb.String())
	}
	if !strings.Contains(out.String(), `Created user "admin" with password: `) {
		t.Errorf("the first-start password was not printed: %q", out.String())
	}
	cancel() // SIGINT
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after interrupt:\n%s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("vigil up did not stop")
	}
}

func TestUserCommands(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	code, _, errOut := vigil(t, ctx, "a-long-password\n", "user", "add", "alice", "--data-dir", dir, "--role", "viewer", "--password-stdin")
	if code != 0 || !strings.Contains(errOut, `added viewer user "alice"`) {
		t.Fatalf("add: %d %s", code, errOut)
	}
	code, out, _ := vigil(t, ctx, "", "user", "add", "--data-dir", dir, "gw", "--role", "device", "--pub", "vigil/s1/#", "--generate")
	if code != 0 || len(strings.TrimSpace(out)) != 24 {
		t.Fatalf("add --generate: %d %q", code, out)
	}
	if code, _, errOut := vigil(t, ctx, "short\n", "user", "add", "bob", "--data-dir", dir, "--password-stdin"); code != 1 || !strings.Contains(errOut, "at least 8") {
		t.Errorf("short password: %d %s", code, errOut)
	}
	if code, _, errOut := vigil(t, ctx, "", "user", "add", "carol", "--data-dir", dir); code != 2 || !strings.Contains(errOut, "--password-stdin or --generate") {
		t.Errorf("no terminal: %d %s", code, errOut)
	}
	code, out, _ = vigil(t, ctx, "", "user", "list", "--data-dir", dir, "--json")
	var list []struct {
		Name, Role string
		Publish    []string
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 2 || list[1].Name != "gw" || list[1].Publish[0] != "vigil/s1/#" {
		t.Fatalf("list: %d %v %s", code, err, out)
	}
	if strings.Contains(out, "$2a$") {
		t.Error("list shows password hashes")
	}
	if code, _, _ := vigil(t, ctx, "new-long-password\n", "user", "passwd", "alice", "--data-dir", dir, "--password-stdin"); code != 0 {
		t.Error("passwd failed")
	}
	if code, _, _ := vigil(t, ctx, "", "user", "remove", "alice", "--data-dir", dir); code != 0 {
		t.Error("remove failed")
	}
	if code, _, errOut := vigil(t, ctx, "", "user", "remove", "alice", "--data-dir", dir); code != 1 || !strings.Contains(errOut, `no user "alice"`) {
		t.Errorf("remove twice: %d %s", code, errOut)
	}
}

// startVigil runs a vigil up in the test (loopback listeners on port 0,
// the admin's password "admin-password"), changed first by mutate.
func startVigil(t *testing.T, mutate func(*conf.Config)) *app.App {
	t.Helper()
	cfg := conf.New()
	cfg.Data.Dir = t.TempDir()
	cfg.MQTT.Listen, cfg.MQTT.WSListen, cfg.HTTP.Listen = "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.Auth.BcryptCost = 4
	if mutate != nil {
		mutate(cfg)
	}
	a, err := app.Open(context.Background(), cfg, app.Options{AdminPassword: "admin-password", Out: io.Discard}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestSimAndSubAgainstARunningVigil(t *testing.T) {
	a := startVigil(t, nil)
	broker := a.Broker.URL("tcp")

	subDone := make(chan string)
	go func() {
		_, out, _ := vigil(t, context.Background(), "", "sub", "--broker", broker, "--count", "3", "--duration", "20s", "sensors/#")
		subDone <- out
	}()
	code, out, errOut := vigil(t, context.Background(), "", "sim", "--broker", broker, "--devices", "5", "--period", "100ms", "--duration", "2s", "--legacy", "--json", "--quiet")
	if code != 0 {
		t.Fatalf("sim: %d %s", code, errOut)
	}
	var sum struct{ Connected, Published, Errors int }
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Connected != 5 || sum.Published < 50 || sum.Errors != 0 {
		t.Fatalf("sim --json: %v %s", err, out)
	}
	subOut := <-subDone
	if strings.Count(subOut, "sensors/temperature {\n    \"sensor_id\": ") != 3 {
		t.Errorf("sub printed:\n%s", subOut)
	}
}

func TestFlagsMayStandAnywhereAmongTheArguments(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		positional []string
		count      int
		jsonOut    bool
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, 0, false},
		{[]string{"--count", "3", "a"}, []string{"a"}, 3, false},
		{[]string{"a", "--count", "3", "b", "--json"}, []string{"a", "b"}, 3, true},
		{[]string{"a", "-", "--json"}, []string{"a", "-"}, 0, true},
		{[]string{"a", "--", "--json", "-b"}, []string{"a", "--json", "-b"}, 0, false},
		{[]string{"--json", "--", "-a"}, []string{"-a"}, 0, true},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		count := fs.Int("count", 0, "")
		jsonOut := fs.Bool("json", false, "")
		got, err := parseInterspersed(fs, tt.args)
		if err != nil || !slices.Equal(got, tt.positional) || *count != tt.count || *jsonOut != tt.jsonOut {
			t.Errorf("%q: positional %q, count %d, json %v, err %v; want %q, %d, %v", tt.args, got, *count, *jsonOut, err, tt.positional, tt.count, tt.jsonOut)
		}
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseInterspersed(fs, []string{"a", "--nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("an unknown flag after an argument: %v", err)
	}
}

// vigil camera --probe asks a real RTSP server (GStreamer's) what it
// serves.
func TestCameraProbe(t *testing.T) {
	ffmpeg := testpeer.Need(t, "ffmpeg")
	file := filepath.Join(t.TempDir(), "cam.mp4")
	if out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=15", "-t", "3",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", file).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	cam := testpeer.StartRTSPCamera(t, file, "h264")
	code, out, errs := vigil(t, context.Background(), "", "camera", "--probe", cam.URL)
	if code != 0 || !strings.Contains(out, "H264 640x360 15 fps") || !strings.Contains(out, "as it is") {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	code, _, errs = vigil(t, context.Background(), "", "camera", "--probe", "rtsp://admin:secret-pw@127.0.0.1:1/cam")
	if code == 0 || strings.Contains(errs, "secret-pw") || !strings.Contains(errs, "not in its URL") {
		t.Fatalf("a login in the URL: exit %d: %s", code, errs)
	}
}
