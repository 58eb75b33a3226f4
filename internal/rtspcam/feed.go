package rtspcam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/pion/rtp"

	"github.com/vigilhq/vigil/internal/media"
)

// FeedConfig configures a Feed.
type FeedConfig struct {
	Source Source
	// Transport is "tcp", "udp", or "" (UDP, then TCP if nothing comes).
	Transport string
	// Window is how much video the feed keeps from before now, from a
	// keyframe (pre-roll); 0 keeps the pictures since the last keyframe
	// only, which live view starts with.
	Window time.Duration
	// MaxBytes bounds what the feed keeps (default 32 MiB): a camera whose
	// keyframes are further apart than the window keeps less.
	MaxBytes int
	// Timeout ends a session that sends nothing for this long (default 5 s).
	Timeout time.Duration
	// Backoff between connection attempts doubles from MinBackoff (default
	// 500 ms) to MaxBackoff (default 10 s).
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger
}

// Feed is one camera's RTSP session, pulled and reconnected for as long as
// the feed runs, handed to any number of subscribers (a recording, a live
// viewer), with the last seconds kept in memory for those who come late.
type Feed struct {
	cfg    FeedConfig
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	format *media.AVFormat
	ring   []media.AU // from a keyframe, in arrival order
	bytes  int
	subs   map[*Sub]struct{}
	stats  FeedStats
}

// FeedStats is what a feed did.
type FeedStats struct {
	Connected  bool
	Sessions   int // sessions that delivered a picture
	Reconnects int // sessions after the first that delivered one
	Frames     uint64
	Bytes      uint64
	Bad        uint64 // packets and pictures that could not be used
	Lost       uint64 // RTP packets lost (sequence gaps)
	LastError  string
	// LastFrame is when the newest picture arrived.
	LastFrame time.Time
	// Gap is the longest time without pictures between two sessions.
	Gap time.Duration
}

// Item is what a subscriber receives: a format (first, and whenever it
// changes), or an access unit in it.
type Item struct {
	Format *media.AVFormat
	AU     media.AU
}

// Sub is a subscription to a feed.
type Sub struct {
	f  *Feed
	ch chan Item
	// waitKey drops pictures until a keyframe, after a full channel.
	waitKey bool
	dropped uint64
	closed  bool
	// PreRoll is how much of what the subscriber got first was from before
	// it subscribed.
	PreRoll time.Duration
}

// C carries the items; it is closed when the feed or the subscription
// ends.
func (s *Sub) C() <-chan Item { return s.ch }

// Dropped counts the access units the subscriber lost because it fell
// behind.
func (s *Sub) Dropped() uint64 {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return s.dropped
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.unsubscribe(s)
}

// StartFeed starts pulling the camera; Close stops it.
func StartFeed(cfg FeedConfig) *Feed {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 32 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Feed{cfg: cfg, cancel: cancel, done: make(chan struct{}), subs: map[*Sub]struct{}{}}
	go f.run(ctx)
	return f
}

// Close stops the feed and ends its subscriptions.
func (f *Feed) Close() {
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		f.unsubscribe(s)
	}
	f.ring, f.bytes = nil, 0
}

// Stats returns what the feed did so far.
func (f *Feed) Stats() FeedStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Format returns the stream's format, nil before it is known.
func (f *Feed) Format() *media.AVFormat {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.format
}

// Held is what the feed keeps in memory: its duration and bytes.
func (f *Feed) Held() (time.Duration, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.span(), f.bytes
}

// SetWindow changes how much video the feed keeps.
func (f *Feed) SetWindow(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg.Window = d
	f.trim()
}

// Subscribe starts a subscription of size items. It begins with the format
// if known, then the pictures held from the last keyframe at or before
// preRoll ago (the oldest held if none is that old), then what comes.
func (f *Feed) Subscribe(preRoll time.Duration, size int) *Sub {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &Sub{f: f, ch: make(chan Item, max(size, 16)+len(f.ring)+1)}
	if f.format != nil {
		s.ch <- Item{Format: f.format}
	}
	start := -1
	if len(f.ring) > 0 {
		newest := f.ring[len(f.ring)-1].DTS
		want := newest - int64(preRoll.Seconds()*media.VideoClock)
		for i, au := range f.ring {
			if au.Track == media.TrackVideo && au.Key && (start < 0 || au.DTS <= want) {
				start = i
			}
		}
	}
	if start >= 0 {
		first := f.ring[start].DTS
		for _, au := range f.ring[start:] {
			s.ch <- Item{AU: au}
		}
		s.PreRoll = time.Duration(media.TicksAt(time.Now(), media.VideoClock)-first) * time.Second / media.VideoClock
	} else {
		s.waitKey = true
	}
	f.subs[s] = struct{}{}
	return s
}

// unsubscribe ends s. f.mu is held.
func (f *Feed) unsubscribe(s *Sub) {
	if s.closed {
		return
	}
	s.closed = true
	delete(f.subs, s)
	close(s.ch)
}

// span is the duration of video held. f.mu is held.
func (f *Feed) span() time.Duration {
	first, last := int64(-1), int64(-1)
	for _, au := range f.ring {
		if au.Track == media.TrackVideo {
			if first < 0 {
				first = au.DTS
			}
			last = au.DTS
		}
	}
	if first < 0 {
		return 0
	}
	return time.Duration(last-first) * time.Second / media.VideoClock
}

// trim drops whole groups of pictures from the front while the rest still
// covers the window, and while the ring is over its bytes. f.mu is held.
func (f *Feed) trim() {
	window := int64(f.cfg.Window.Seconds() * media.VideoClock)
	for {
		var newest int64
		for i := len(f.ring) - 1; i >= 0; i-- {
			if f.ring[i].Track == media.TrackVideo {
				newest = f.ring[i].DTS
				break
			}
		}
		// The second keyframe: what is before it may go.
		next := -1
		for i := 1; i < len(f.ring); i++ {
			if f.ring[i].Track == media.TrackVideo && f.ring[i].Key {
				next = i
				break
			}
		}
		switch {
		case next > 0 && (f.ring[next].DTS <= newest-window || f.bytes > f.cfg.MaxBytes):
			f.drop(next)
		case next < 0 && f.bytes > f.cfg.MaxBytes:
			f.drop(len(f.ring)) // one group larger than the bound: keep nothing
			return
		default:
			return
		}
	}
}

// drop removes the first n access units of the ring. f.mu is held.
func (f *Feed) drop(n int) {
	for _, au := range f.ring[:n] {
		f.bytes -= au.Size
	}
	clear(f.ring[:n])
	f.ring = append(f.ring[:0], f.ring[n:]...)
}

// emit hands a packet's output to the ring and the subscribers.
func (f *Feed) emit(out Output, bad uint64) {
	if out.Format == nil && len(out.AUs) == 0 && bad == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Bad += bad
	if out.Format != nil && (f.format == nil || !f.format.Equal(*out.Format)) {
		if f.format != nil {
			f.cfg.Log.Info("camera format changed", "camera", f.cfg.Source.Redacted(), "from", f.format.String(), "to", out.Format.String())
		}
		f.format = out.Format
		f.ring, f.bytes = f.ring[:0], 0
		for s := range f.subs {
			f.send(s, Item{Format: out.Format})
		}
	}
	for _, au := range out.AUs {
		if au.Track == media.TrackVideo {
			f.stats.Frames++
			f.stats.LastFrame = time.Now()
		}
		f.stats.Bytes += uint64(au.Size)
		if len(f.ring) > 0 || (au.Track == media.TrackVideo && au.Key) {
			f.ring = append(f.ring, au)
			f.bytes += au.Size
		}
		for s := range f.subs {
			f.send(s, Item{AU: au})
		}
	}
	f.trim()
}

// send gives a subscriber an item without ever waiting: one that is
// behind loses pictures up to the next keyframe. f.mu is held.
func (f *Feed) send(s *Sub, it Item) {
	if it.Format == nil && s.waitKey {
		if it.AU.Track != media.TrackVideo || !it.AU.Key {
			s.dropped++
			return
		}
		s.waitKey = false
	}
	select {
	case s.ch <- it:
	default:
		if it.Format != nil {
			// A format must reach it: make room.
			select {
			case <-s.ch:
				s.dropped++
			default:
			}
			s.ch <- it
		} else {
			s.dropped++
		}
		s.waitKey = true
	}
}

func (f *Feed) run(ctx context.Context) {
	defer close(f.done)
	backoff := f.cfg.MinBackoff
	var lostAt time.Time
	for ctx.Err() == nil {
		started := time.Now()
		delivered, err := f.session(ctx, lostAt)
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		f.stats.Connected = false
		if err != nil {
			f.stats.LastError = err.Error()
		}
		f.mu.Unlock()
		if delivered {
			lostAt = time.Now()
			f.cfg.Log.Warn("camera lost; reconnecting", "camera", f.cfg.Source.Redacted(), "error", err)
		} else {
			f.cfg.Log.Debug("camera unreachable", "camera", f.cfg.Source.Redacted(), "error", err)
		}
		if delivered && time.Since(started) > 10*time.Second {
			backoff = f.cfg.MinBackoff
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, f.cfg.MaxBackoff)
	}
}

// session runs one RTSP session until it fails or ctx ends; delivered
// tells whether it gave a picture.
func (f *Feed) session(ctx context.Context, lostAt time.Time) (delivered bool, err error) {
	src := f.cfg.Source
	u, err := base.ParseURL(src.URL)
	if err != nil {
		return false, fmt.Errorf("%s is not an RTSP URL", src.Redacted())
	}
	if src.Username != "" {
		u.User = url.UserPassword(src.Username, src.Password)
	}
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, ReadTimeout: f.cfg.Timeout, WriteTimeout: f.cfg.Timeout, UDPReadBufferSize: 4 << 20}
	switch f.cfg.Transport {
	case "tcp":
		p := gortsplib.ProtocolTCP
		c.Protocol = &p
	case "udp":
		p := gortsplib.ProtocolUDP
		c.Protocol = &p
	}
	var mu sync.Mutex // packets of the video and the audio may come on two goroutines
	c.OnPacketsLost = func(n uint64) {
		f.mu.Lock()
		f.stats.Lost += n
		f.mu.Unlock()
	}
	c.OnDecodeError = func(error) {}
	if err := c.Start(); err != nil {
		return false, clean(err, src)
	}
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		return false, clean(err, src)
	}
	vm, vf := findVideo(desc)
	if vm == nil {
		return false, errors.New("the camera serves no H.264 or H.265 video")
	}
	var aac *format.MPEG4Audio
	am := desc.FindFormat(&aac)
	dep, err := NewDepacketizer(vf, aac)
	if err != nil {
		return false, err
	}
	if _, err := c.Setup(desc.BaseURL, vm, 0, 0); err != nil {
		return false, clean(err, src)
	}
	if am != nil && dep.aac != nil {
		if _, err := c.Setup(desc.BaseURL, am, 0, 0); err != nil {
			am = nil // video alone, then
		}
	} else {
		am = nil
	}
	first := true
	handle := func(out Output) {
		if len(out.AUs) > 0 && first {
			first, delivered = false, true
			f.mu.Lock()
			f.stats.Connected = true
			f.stats.Sessions++
			if f.stats.Sessions > 1 {
				f.stats.Reconnects++
			}
			if !lostAt.IsZero() && !f.stats.LastFrame.IsZero() {
				f.stats.Gap = max(f.stats.Gap, time.Since(f.stats.LastFrame))
			}
			again := f.stats.Sessions > 1
			f.mu.Unlock()
			if again {
				f.cfg.Log.Info("camera reached again", "camera", src.Redacted())
			}
		}
	}
	c.OnPacketRTP(vm, vf, func(pkt *rtp.Packet) {
		pts, ok := c.PacketPTS(vm, pkt)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		bad := dep.Bad
		out := dep.Video(pkt, pts, time.Now())
		handle(out)
		f.emit(out, dep.Bad-bad)
	})
	if am != nil {
		c.OnPacketRTP(am, aac, func(pkt *rtp.Packet) {
			pts, ok := c.PacketPTS(am, pkt)
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			bad := dep.Bad
			out := dep.Audio(pkt, pts, time.Now())
			f.emit(out, dep.Bad-bad)
		})
	}
	if _, err := c.Play(nil); err != nil {
		return false, clean(err, src)
	}
	err = c.Wait()
	if err != nil {
		err = clean(err, src)
	}
	return delivered, err
}

// findVideo returns the description's first H.264 or H.265 video.
func findVideo(desc *description.Session) (*description.Media, format.Format) {
	for _, m := range desc.Medias {
		for _, f := range m.Formats {
			switch f.(type) {
			case *format.H264, *format.H265:
				return m, f
			}
		}
	}
	return nil, nil
}
