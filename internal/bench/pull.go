package bench

// RTSP pull: one `vigil agent` pulls N IP cameras (internal/rtspserve
// servers in this process, each playing the same MP4 file in real time)
// and stores their H.264/H.265 as it comes. The segments are read back:
// zero loss means each holds every picture from the stream's first
// keyframe to its end, on a timeline without a hole.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/measure"
	"github.com/vigilhq/vigil/internal/media"
	"github.com/vigilhq/vigil/internal/rtspserve"
	"github.com/vigilhq/vigil/internal/users"
)

// PullOptions configure an RTSP pull benchmark.
type PullOptions struct {
	Streams  []int         // concurrent stream counts to try, in order
	Duration time.Duration // of each stream
	// File is the MP4 (H.264 or H.265) the cameras play; "" makes a 20 s
	// 1920x1080 25 fps H.264 file at 4 Mbit/s with ffmpeg, in the bench's
	// temporary directory.
	File      string
	Transport string // "tcp" (default) or "udp"
	Vigil     string // binary; default this executable
	Progress  io.Writer
}

// PullInput is the file the cameras play, as ffprobe sees it.
type PullInput struct {
	File        string  `json:"file,omitempty"` // empty: made for the run, then deleted
	Codec       string  `json:"codec"`
	Width       int     `json:"width"`
	Height      int     `json:"height"`
	FPS         float64 `json:"fps"`
	Frames      int     `json:"frames"`
	GOPSeconds  float64 `json:"gop_s"`        // mean time between keyframes
	BitrateMbps float64 `json:"bitrate_mbps"` // video packets' bytes over the frames' time
}

// PullStep is one step of the sweep: N cameras pulled by one agent.
type PullStep struct {
	Streams int `json:"streams"`
	// Frames: expected from each stream's first keyframe to its end at the
	// file's rate; stored in the segments, read back; reported by the agent.
	FramesExpected int `json:"frames_expected"`
	FramesStored   int `json:"frames_stored"`
	FramesReported int `json:"frames_reported"`
	// FramesMissing are the frames missing from the segments' timelines:
	// holes of a whole number of frames (Gaps), and at their end.
	FramesMissing int     `json:"frames_missing"`
	Gaps          int     `json:"gaps"`
	MaxGapMS      float64 `json:"max_gap_ms"`
	LossPct       float64 `json:"loss_pct"` // of the frames expected
	// Stalls are holes of another length: a server that fell more than
	// 250 ms behind moves its timeline forward by as much (rtspserve), so
	// it sent nothing for that time and lost no frame. They say the
	// machine is saturated.
	Stalls   int     `json:"server_stalls"`
	StalledS float64 `json:"server_stalled_s"`
	// From the agent's reports.
	PacketsLost uint64 `json:"packets_lost"`
	BadFrames   uint64 `json:"bad_frames"`
	Reconnects  int    `json:"reconnects"`
	WriteErrors int    `json:"write_errors"`
	NotDuration int    `json:"ended_early"` // streams that did not end on their duration
	// FramesSent is what the servers wrote meanwhile (each to its one
	// client); ServerSkipped the frames they skipped by falling more than
	// 250 ms behind (the machine, not the agent).
	FramesSent    int `json:"frames_sent"`
	ServerSkipped int `json:"server_skipped"`
	// ServerDrops are RTP packets the servers dropped because a reader's
	// write queue (gortsplib's, 256 packets) was full: the agent did not
	// take them fast enough, as a camera drops them for a slow client.
	ServerDrops int64 `json:"server_dropped_packets"`
	// StartMS is the mean time from the command to the stream's first
	// stored picture: the session's setup and the wait for a keyframe.
	StartMS float64 `json:"start_ms"`
	Verdict string  `json:"verdict"`

	WindowS         float64 `json:"window_s"` // every stream recording, until the first ended
	AgentCPUPct     float64 `json:"agent_cpu_pct"`
	CPUPerStreamPct float64 `json:"agent_cpu_per_stream_pct"`
	CPUPerFrameUS   float64 `json:"agent_cpu_per_frame_us"`
	ServersCPUPct   float64 `json:"servers_cpu_pct"`  // this process: the RTSP servers
	MachinePct      float64 `json:"machine_busy_pct"` // every core, in % of one (200: 2 cores busy)
	AgentRSSMB      float64 `json:"agent_peak_rss_mb"`
	StoredMbps      float64 `json:"stored_mbps_per_stream"` // segment bytes over their duration, mean
	WrittenMBps     float64 `json:"written_mb_per_s"`       // all streams
}

// PullResult is the sweep.
type PullResult struct {
	Input     PullInput  `json:"input"`
	Transport string     `json:"transport"`
	DurationS float64    `json:"duration_s"`
	Steps     []PullStep `json:"steps"`
	// MaxStreams is the largest N that lost nothing.
	MaxStreams int `json:"max_streams_zero_loss"`
}

// RunPull measures one `vigil agent` process pulling N RTSP cameras at
// once, for each N, and stops after the first N that is not a clean 0
// loss: a picture lost, or servers that could not keep time.
func RunPull(ctx context.Context, o PullOptions) (*PullResult, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Transport == "" {
		o.Transport = "tcp"
	}
	if o.Transport != "tcp" && o.Transport != "udp" {
		return nil, fmt.Errorf("transport %q: tcp or udp", o.Transport)
	}
	if o.Duration < time.Second {
		return nil, errors.New("a stream must last a second at least")
	}
	dir, err := os.MkdirTemp("", "vigil-bench-pull-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	file := o.File
	if file == "" {
		file = filepath.Join(dir, "1080p-h264-4M.mp4")
		fmt.Fprintf(o.Progress, "making the camera's video with ffmpeg (20 s, 1920x1080, 25 fps, H.264 at 4 Mbit/s)...\n")
		if err := makePullVideo(ctx, file); err != nil {
			return nil, err
		}
	}
	in, err := probeVideo(ctx, file)
	if err != nil {
		return nil, err
	}
	if o.File != "" {
		in.File = o.File
	}
	fmt.Fprintf(o.Progress, "input: %s %dx%d, %.3g fps, keyframe every %.2g s, %.2f Mbit/s, %d frames (%s)\n",
		in.Codec, in.Width, in.Height, in.FPS, in.GOPSeconds, in.BitrateMbps, in.Frames, filepath.Base(file))
	if in.FPS <= 0 || in.Frames < 2 {
		return nil, fmt.Errorf("%s: no usable video", file)
	}
	if file, err = cameraCopy(ctx, file, filepath.Join(dir, "camera.mp4")); err != nil {
		return nil, err
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mc := conf.New().MQTT
	mc.Listen, mc.WSListen, mc.Persistence = "127.0.0.1:0", "", false
	b, err := broker.Open(broker.Config{MQTT: mc, DataDir: dir}, noUsers{}, log, nil)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	const id = "pull"
	var mu sync.Mutex
	reports := map[string]ingest.SegmentReport{}
	var hb ingest.Heartbeat
	followAgent(b, id, &mu, reports, &hb)
	password := users.RandomPassword()
	b.AddCredential("agent-"+id, password, &users.User{Name: "agent-" + id, Role: users.RoleDevice,
		Publish: []string{ingest.AgentTopic(id, "#")}, Subscribe: []string{ingest.AgentTopic(id, ingest.AgentCmd)}}, ingest.AgentClientID(id))

	bin := o.Vigil
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	frameDur := float64(media.VideoClock) / in.FPS
	res := &PullResult{Input: *in, Transport: o.Transport, DurationS: o.Duration.Seconds()}
	storage := filepath.Join(dir, "clips")
	for _, n := range o.Streams {
		mu.Lock()
		hb = ingest.Heartbeat{}
		mu.Unlock()
		st := &pullStep{n: n, o: o, in: in, file: file, dir: dir, storage: storage, frameDur: frameDur, bin: bin, password: password,
			brokerURL: b.URL(broker.TCP), b: b, id: id, mu: &mu, reports: reports, hb: &hb}
		step, err := st.run(ctx)
		st.cleanup()
		if err != nil {
			return nil, fmt.Errorf("%d streams: %w", n, err)
		}
		res.Steps = append(res.Steps, *step)
		fmt.Fprintf(o.Progress, "  %2d streams: %s; agent CPU %.0f%% (%.2f%% a stream, %.0f µs a frame), RSS %.0f MB; servers %.0f%%, machine %.0f%% of %d%%; stored %.2f Mbit/s a stream\n",
			n, step.Verdict, step.AgentCPUPct, step.CPUPerStreamPct, step.CPUPerFrameUS, step.AgentRSSMB, step.ServersCPUPct, step.MachinePct, 100*runtime.NumCPU(), step.StoredMbps)
		if step.Verdict != "0 loss" {
			break
		}
		res.MaxStreams = n
	}
	return res, nil
}

// pullStep is one step's servers, agent and accounting.
type pullStep struct {
	n                   int
	o                   PullOptions
	in                  *PullInput
	file, dir, storage  string
	frameDur            float64
	bin, password       string
	brokerURL, id       string
	b                   *broker.Server
	mu                  *sync.Mutex
	reports             map[string]ingest.SegmentReport
	hb                  *ingest.Heartbeat
	servers             []*rtspserve.Server
	agent               *exec.Cmd
	agentDone           <-chan struct{}
	stopProgress        context.CancelFunc
	ids                 []string
	cmdAt               []time.Time
	framesAt0, framesAt []uint64
}

// cleanup stops what the step started: the agent (by its pid), the
// servers, and removes its segments.
func (s *pullStep) cleanup() {
	if s.stopProgress != nil {
		s.stopProgress()
	}
	if s.agent != nil {
		stopProcess(s.agent, s.agentDone)
	}
	for _, srv := range s.servers {
		srv.Close()
	}
	os.RemoveAll(filepath.Join(s.storage, "pull"))
}

func (s *pullStep) exited() bool {
	select {
	case <-s.agentDone:
		return true
	default:
		return false
	}
}

// waitReports waits for every stream's report of state, or the agent's
// end.
func (s *pullStep) waitReports(ctx context.Context, d time.Duration, state string) error {
	err := waitCond(ctx, d, func() bool {
		if s.exited() {
			return true
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, id := range s.ids {
			if _, ok := s.reports[id+"/"+state]; !ok {
				if _, ended := s.reports[id+"/"+ingest.SegmentDone]; ended {
					continue // ended already (an error, or lost): the final check tells
				}
				return false
			}
		}
		return true
	})
	if err == nil && s.exited() {
		err = fmt.Errorf("the agent exited (log: %s)", filepath.Join(s.dir, "agent.log"))
	}
	return err
}

func (s *pullStep) run(ctx context.Context) (*PullStep, error) {
	n, o := s.n, s.o
	// The cameras, their keyframes spread over a GOP as real cameras'
	// are (started at once, all would send theirs at the same moment).
	spread := time.Duration(s.in.GOPSeconds * float64(time.Second) / float64(n))
	for range n {
		t := time.Now()
		srv, err := rtspserve.Start(rtspserve.Config{File: s.file, UDP: o.Transport == "udp"})
		if err != nil {
			return nil, fmt.Errorf("RTSP server: %w", err)
		}
		s.servers = append(s.servers, srv)
		if err := sleepCtx(ctx, max(spread-time.Since(t), 0)); err != nil {
			return nil, err
		}
	}

	s.agent = exec.Command(s.bin, "agent", "--id", s.id, "--broker", s.brokerURL, "--username", "agent-"+s.id, "--listen", "127.0.0.1",
		"--storage", s.storage, "--capacity", "1", "--rtsp-capacity", fmt.Sprint(n), "--log-level", "warn")
	s.agent.Env = append(os.Environ(), "VIGIL_AGENT_PASSWORD="+s.password)
	var err error
	if s.agentDone, err = startProcess(s.agent, s.dir, "agent"); err != nil {
		s.agent = nil
		return nil, err
	}
	if err := waitCond(ctx, 30*time.Second, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.hb.Addr != "" || s.exited() }); err != nil || s.exited() {
		return nil, fmt.Errorf("the agent did not report (log: %s)", filepath.Join(s.dir, "agent.log"))
	}
	pid := s.agent.Process.Pid

	// Command the streams, and watch.
	dur := int(o.Duration.Round(time.Second).Seconds())
	s.ids = make([]string, n)
	s.cmdAt = make([]time.Time, n)
	s.framesAt0 = make([]uint64, n)
	for i := range n {
		s.ids[i] = fmt.Sprintf("n%d-s%d", n, i)
		c, _ := json.Marshal(ingest.AgentCommand{Action: ingest.ActionExpect, Kind: ingest.KindRTSP, StreamID: s.ids[i],
			RTSP: &ingest.RTSPSource{URL: s.servers[i].URL(), Transport: o.Transport},
			Dir:  "pull/" + s.ids[i], Segment: "seg.mp4", Duration: dur})
		s.framesAt0[i] = s.servers[i].Frames()
		s.cmdAt[i] = time.Now()
		s.b.Publish(ingest.AgentTopic(s.id, ingest.AgentCmd), c, false, 1)
	}
	t0 := s.cmdAt[0]
	progressCtx, stop := context.WithCancel(ctx)
	s.stopProgress = stop
	var prevFrames uint64
	prevAt := time.Now()
	cpuPrev, _ := cpuSeconds(pid)
	go measure.Progress(progressCtx, o.Progress, 2*time.Second, func() string {
		s.mu.Lock()
		var frames uint64
		for _, st := range s.hb.Streams {
			frames += st.Frames
		}
		recording, done := 0, 0
		for _, id := range s.ids {
			if _, ok := s.reports[id+"/"+ingest.SegmentRecording]; ok {
				recording++
			}
			if _, ok := s.reports[id+"/"+ingest.SegmentDone]; ok {
				done++
			}
		}
		s.mu.Unlock()
		now := time.Now()
		cpu, _ := cpuSeconds(pid)
		secs := now.Sub(prevAt).Seconds()
		line := fmt.Sprintf("  %2d streams, %4.1f s: recording %d/%d, done %d, stored %.0f frames/s, agent CPU %.0f%%",
			n, now.Sub(t0).Seconds(), recording, n, done, float64(frames-min(prevFrames, frames))/secs, 100*(cpu-cpuPrev)/secs)
		prevFrames, prevAt, cpuPrev = frames, now, cpu
		return line
	})

	if err := s.waitReports(ctx, 15*time.Second, ingest.SegmentExpecting); err != nil {
		return nil, fmt.Errorf("the agent did not take the streams: %w", err)
	}
	if err := s.waitReports(ctx, 30*time.Second, ingest.SegmentRecording); err != nil {
		return nil, fmt.Errorf("not every stream recorded: %w", err)
	}
	// The window: every stream recording, until the first one ends.
	w0 := time.Now()
	cpu0, _ := cpuSeconds(pid)
	self0, _ := cpuSeconds(os.Getpid())
	busy0 := machineBusy()
	first := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, id := range s.ids {
			if _, ok := s.reports[id+"/"+ingest.SegmentDone]; ok {
				return true
			}
		}
		return s.exited()
	}
	if err := waitCond(ctx, o.Duration+30*time.Second, first); err != nil {
		return nil, fmt.Errorf("no stream ended: %w", err)
	}
	w1 := time.Now()
	cpu1, _ := cpuSeconds(pid)
	self1, _ := cpuSeconds(os.Getpid())
	busy1 := machineBusy()
	if err := s.waitReports(ctx, 30*time.Second, ingest.SegmentDone); err != nil {
		return nil, fmt.Errorf("no final reports: %w", err)
	}
	tEnd := time.Now()
	s.framesAt = make([]uint64, n)
	for i, srv := range s.servers {
		s.framesAt[i] = srv.Frames()
	}
	var drops int64
	for _, srv := range s.servers {
		drops += int64(srv.WriteErrors())
	}
	stop()
	step := &PullStep{Streams: n, ServerDrops: drops}
	step.AgentRSSMB, _ = peakRSSMB(pid)
	window := w1.Sub(w0).Seconds()
	step.WindowS = window
	if window > 0 {
		step.AgentCPUPct = 100 * (cpu1 - cpu0) / window
		step.ServersCPUPct = 100 * (self1 - self0) / window
		step.MachinePct = 100 * (busy1 - busy0) / window
	}
	step.CPUPerStreamPct = step.AgentCPUPct / float64(n)

	// The servers' side: what they wrote, and what they skipped.
	fps := s.in.FPS
	for i := range n {
		sent := int(s.framesAt[i] - s.framesAt0[i])
		step.FramesSent += sent
		if want := int(tEnd.Sub(s.cmdAt[i]).Seconds() * fps); want-sent > 2 {
			step.ServerSkipped += want - sent
		}
	}

	// The segments, read back.
	var mbps float64
	var startMS float64
	var problems []string
	for i, id := range s.ids {
		s.mu.Lock()
		r := s.reports[id+"/"+ingest.SegmentDone]
		s.mu.Unlock()
		step.FramesReported += r.Frames
		step.PacketsLost += r.Lost
		step.BadFrames += r.BadFrames
		step.Reconnects += r.Reconnects
		step.WriteErrors += r.WriteErrors
		if r.Reason != ingest.EndDuration {
			step.NotDuration++
			problems = append(problems, fmt.Sprintf("%s ended: %q", id, r.Reason))
		}
		seg, err := media.ReadAVSegment(filepath.Join(s.storage, "pull", id, "seg.mp4"))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", id, err))
			step.FramesExpected += int(o.Duration.Seconds() * fps)
			step.FramesMissing += int(o.Duration.Seconds() * fps)
			continue
		}
		end := media.TicksAt(s.cmdAt[i].Add(time.Duration(dur)*time.Second), media.VideoClock)
		c := checkSegment(seg.Video, s.frameDur, end)
		if !c.KeyFirst {
			problems = append(problems, id+": does not start with a keyframe")
		}
		if seg.Truncated {
			problems = append(problems, id+": truncated")
		}
		if c.Frames != r.Frames {
			problems = append(problems, fmt.Sprintf("%s: %d frames in the file, %d reported", id, c.Frames, r.Frames))
		}
		step.FramesStored += c.Frames
		step.FramesExpected += c.Frames + c.Missing
		step.FramesMissing += c.Missing
		step.Stalls += c.Stalls
		step.StalledS += float64(c.Stalled) / media.VideoClock
		step.Gaps += c.Gaps
		step.MaxGapMS = max(step.MaxGapMS, float64(c.MaxGap)*1000/media.VideoClock)
		var sb int64
		for _, v := range seg.Video {
			sb += int64(len(v.Payload))
		}
		if d := seg.Duration(); d > 0 {
			mbps += float64(sb) * 8 / d.Seconds() / 1e6
		}
		if c.Frames > 0 {
			startMS += float64(c.First-media.TicksAt(s.cmdAt[i], media.VideoClock)) * 1000 / media.VideoClock
		}
	}
	step.StoredMbps = mbps / float64(n)
	step.StartMS = startMS / float64(n)
	step.WrittenMBps = mbps / 8
	if window > 0 {
		// The frames stored in the window: every stream's, at the file's rate.
		step.CPUPerFrameUS = (cpu1 - cpu0) * 1e6 / (float64(n) * fps * window)
	}
	if step.FramesExpected > 0 {
		step.LossPct = 100 * float64(step.FramesMissing) / float64(step.FramesExpected)
	}
	clean := step.PacketsLost == 0 && step.BadFrames == 0 && step.Reconnects == 0 && step.WriteErrors == 0 && step.ServerDrops == 0 && len(problems) == 0
	switch {
	case clean && step.FramesMissing == 0 && step.Stalls == 0:
		step.Verdict = "0 loss"
	case clean && step.FramesMissing == 0:
		// The agent stored every frame, but the servers could not keep
		// time: the machine is saturated.
		step.Verdict = fmt.Sprintf("0 loss, but the servers stalled %d times (%.1f s in all): saturated", step.Stalls, step.StalledS)
	default:
		v := fmt.Sprintf("lost %d of %d frames (%.2f%%)", step.FramesMissing, step.FramesExpected, step.LossPct)
		if step.PacketsLost+step.BadFrames > 0 || step.Reconnects > 0 {
			v += fmt.Sprintf(", %d packets lost, %d bad, %d reconnects", step.PacketsLost, step.BadFrames, step.Reconnects)
		}
		if step.Stalls > 0 {
			v += fmt.Sprintf(", the servers stalled %d times (%.1f s in all)", step.Stalls, step.StalledS)
		}
		if step.ServerDrops > 0 {
			v += fmt.Sprintf(", the servers dropped %d packets (write queue full)", step.ServerDrops)
		}
		step.Verdict = v
		for _, p := range problems[:min(len(problems), 5)] {
			fmt.Fprintf(s.o.Progress, "    %s\n", p)
		}
	}
	return step, nil
}

// segmentCheck is what a segment's video holds against the timeline it
// should cover.
type segmentCheck struct {
	Frames int
	// Gaps are holes of a whole number of frame durations (within 2
	// ticks), and a short end: frames lost (Missing).
	Gaps    int
	Missing int
	// Stalls are holes of another length: the camera sent nothing for a
	// while (Stalled ticks in all) and then went on with its next frame.
	Stalls      int
	Stalled     int64
	MaxGap      int64 // the longest step, in 90 kHz ticks
	First, Last int64 // DTS
	KeyFirst    bool
}

// checkSegment checks that video (in decode order) has a picture every
// frameDur ticks up to end (exclusive; 0: do not check the end). A step
// of more than 1.5 frame durations is a hole.
func checkSegment(video []media.AVSample, frameDur float64, end int64) segmentCheck {
	c := segmentCheck{Frames: len(video)}
	if len(video) == 0 || frameDur <= 0 {
		return c
	}
	c.KeyFirst = video[0].Key
	c.First, c.Last = video[0].DTS, video[len(video)-1].DTS
	for i := 1; i < len(video); i++ {
		d := video[i].DTS - video[i-1].DTS
		c.MaxGap = max(c.MaxGap, d)
		if float64(d) <= 1.5*frameDur {
			continue
		}
		k := math.Round(float64(d) / frameDur)
		if math.Abs(float64(d)-k*frameDur) <= 2 {
			c.Gaps++
			c.Missing += int(k) - 1
		} else {
			c.Stalls++
			c.Stalled += d - int64(math.Round(frameDur))
		}
	}
	// The last picture's successor is due at Last+frameDur; every whole
	// frame between that and the end is missing.
	if end > 0 {
		if short := float64(end-c.Last) - frameDur; short >= frameDur {
			c.Missing += int(short / frameDur)
			c.Gaps++
		}
	}
	return c
}

// machineBusy is the CPU time every core spent busy, in seconds (from
// /proc/stat).
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:min(len(f), 9)] {
		x, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += x
		}
	}
	return busy / 100 // USER_HZ
}

// makePullVideo makes the cameras' video: 20 s of 1920x1080 at 25 fps,
// H.264 at 4 Mbit/s, a keyframe every 2 s.
func makePullVideo(ctx context.Context, out string) error {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		return errors.New("ffmpeg is not installed (apt-get install ffmpeg), or give a file with --rtsp-file")
	}
	cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25", "-t", "20",
		"-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M", "-g", "50", "-pix_fmt", "yuv420p", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ffmpeg: %v: %s", err, b)
	}
	return nil
}

// cameraCopy copies the file's video as it is into a file that
// rtspserve reads whole: with a silent AAC track interleaved, so that
// every chunk of the video holds one or two pictures. rtspserve reads
// MP4 files with mediacommon's pmp4, whose sample-to-chunk reading
// (v2.5.2) gives each run of chunks the next run's samples per chunk: an
// ffmpeg file whose chunks (of 1 MiB) hold varying numbers of pictures
// fails to load ("invalid length") or loads wrong pictures. The servers
// play only the video.
func cameraCopy(ctx context.Context, in, out string) (string, error) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		return "", errors.New("ffmpeg is not installed (apt-get install ffmpeg)")
	}
	cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", in, "-f", "lavfi", "-i", "anullsrc=r=96000:cl=mono",
		"-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "16k", "-shortest", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("ffmpeg (copying %s): %v: %s", in, err, b)
	}
	return out, nil
}

// probeVideo reads a file's first video stream with ffprobe: its size,
// rate, keyframe interval and bitrate (from its packets).
func probeVideo(ctx context.Context, file string) (*PullInput, error) {
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		return nil, errors.New("ffprobe is not installed (apt-get install ffmpeg)")
	}
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,width,height,avg_frame_rate:packet=size,flags", "-of", "json", file).Output()
	if err != nil {
		return nil, fmt.Errorf("ffprobe %s: %w", file, err)
	}
	var p struct {
		Streams []struct {
			Codec  string `json:"codec_name"`
			Width  int    `json:"width"`
			Height int    `json:"height"`
			Rate   string `json:"avg_frame_rate"`
		} `json:"streams"`
		Packets []struct {
			Size  string `json:"size"`
			Flags string `json:"flags"`
		} `json:"packets"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		return nil, fmt.Errorf("ffprobe %s: %w", file, err)
	}
	if len(p.Streams) == 0 {
		return nil, fmt.Errorf("%s has no video", file)
	}
	v := p.Streams[0]
	in := &PullInput{Codec: strings.ToUpper(strings.ReplaceAll(v.Codec, "hevc", "h265")), Width: v.Width, Height: v.Height, Frames: len(p.Packets)}
	if num, den, ok := strings.Cut(v.Rate, "/"); ok {
		a, _ := strconv.ParseFloat(num, 64)
		b, _ := strconv.ParseFloat(den, 64)
		if b > 0 {
			in.FPS = a / b
		}
	}
	var bytes int64
	keys := 0
	for _, pk := range p.Packets {
		n, _ := strconv.ParseInt(pk.Size, 10, 64)
		bytes += n
		if strings.HasPrefix(pk.Flags, "K") {
			keys++
		}
	}
	if in.FPS > 0 && in.Frames > 0 {
		secs := float64(in.Frames) / in.FPS
		in.BitrateMbps = float64(bytes) * 8 / secs / 1e6
		if keys > 0 {
			in.GOPSeconds = secs / float64(keys)
		}
	}
	return in, nil
}
