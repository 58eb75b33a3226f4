package testpeer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rtspServer is GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0
// and python3-gi), serving one launch line at one path.
const rtspServer = `import sys, gi
gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
port, path, launch = sys.argv[1], sys.argv[2], sys.argv[3]
server = GstRtspServer.RTSPServer(); server.set_address('127.0.0.1'); server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory(); factory.set_launch(launch); factory.set_shared(True)
server.get_mount_points().add_factory(path, factory)
if server.attach(None) == 0:
    sys.exit('cannot listen on ' + port)
print('ready', flush=True)
GLib.MainLoop().run()
`

// RTSPCamera is an RTSP server that nobody here wrote, serving a video
// file as a camera serves its stream.
type RTSPCamera struct {
	URL    string
	cmd    *exec.Cmd
	t      testing.TB
	py     string
	script string
	port   int
	launch string
	dir    string
}

// StartRTSPCamera serves file (an MP4 of H.264 or H.265, from ffmpeg) at
// rtsp://127.0.0.1:<free port>/cam with GStreamer's RTSP server, copying
// the compressed stream (h264parse/h265parse and the RTP payloader: no
// re-encoding).
func StartRTSPCamera(t testing.TB, file, codec string) *RTSPCamera {
	t.Helper()
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer").CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("GStreamer's RTSP server for %s: %v: %s (scripts/test.sh installs gir1.2-gst-rtsp-server-1.0)", py, err, out)
		}
		t.Skipf("GStreamer's RTSP server is not installed: %s", out)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "rtsp_server.py")
	if err := os.WriteFile(script, []byte(rtspServer), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := map[string]string{"h264": "h264parse ! rtph264pay", "h265": "h265parse ! rtph265pay"}[codec]
	if parse == "" {
		t.Fatalf("codec %q: h264 or h265", codec)
	}
	port := FreePort(t)
	launch := fmt.Sprintf("( filesrc location=%s ! qtdemux ! %s name=pay0 pt=96 config-interval=1 )", file, parse)
	c := &RTSPCamera{URL: fmt.Sprintf("rtsp://127.0.0.1:%d/cam", port), t: t, py: py, script: script, port: port, launch: launch, dir: dir}
	t.Cleanup(c.Stop)
	c.start()
	return c
}

// StartRTSPCameraWithAudio is StartRTSPCamera for a file with AAC audio
// as well: the server sends both, as cameras with a microphone do.
func StartRTSPCameraWithAudio(t testing.TB, file, codec string) *RTSPCamera {
	t.Helper()
	c := StartRTSPCamera(t, file, codec)
	c.Stop()
	parse := map[string]string{"h264": "h264parse ! rtph264pay", "h265": "h265parse ! rtph265pay"}[codec]
	c.launch = fmt.Sprintf("( filesrc location=%s ! qtdemux name=d d.video_0 ! queue ! %s name=pay0 pt=96 config-interval=1 "+
		"d.audio_0 ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97 )", file, parse)
	c.start()
	return c
}

// Restart starts the server again on its port, after Stop (the camera
// comes back).
func (c *RTSPCamera) Restart() {
	c.t.Helper()
	c.Stop()
	c.start()
}

func (c *RTSPCamera) start() {
	t := c.t
	t.Helper()
	cmd := exec.Command(c.py, c.script, fmt.Sprint(c.port), "/cam", c.launch)
	log, err := os.OpenFile(filepath.Join(c.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stderr = log
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.cmd = cmd
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("the RTSP server did not start: %s", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the RTSP server did not start in 10 s")
	}
}

// Stop ends the server (the camera disappears).
func (c *RTSPCamera) Stop() {
	if c.cmd.Process == nil || c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}
