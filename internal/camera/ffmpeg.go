package camera

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"time"
)

// FFmpeg reads a real video source with ffmpeg, as JPEG frames of a fixed
// size and rate, into a Ring: the pre-roll and the live frames of
// `vigil camera`. A file loops forever; a device (/dev/video0) and RTSP
// URLs are read as they come. If ffmpeg stops, it is started again.
type FFmpeg struct {
	Bin    string // ffmpeg; "" looks it up on PATH
	Source string // a file, /dev/videoN or rtsp://...
	Params Params
	Ring   *Ring
	Log    *slog.Logger

	// Frames counts the frames read so far.
	Frames int64
}

// Args returns ffmpeg's arguments: input, scaling and a JPEG stream that
// RFC 2435 can carry (4:2:0, standard Huffman tables) on stdout.
func (f *FFmpeg) Args() []string {
	var in []string
	switch {
	case strings.HasPrefix(f.Source, "/dev/video"):
		in = []string{"-f", "v4l2", "-i", f.Source}
	case strings.HasPrefix(f.Source, "rtsp://") || strings.HasPrefix(f.Source, "rtsps://"):
		in = []string{"-rtsp_transport", "tcp", "-i", f.Source}
	case strings.HasPrefix(f.Source, "lavfi:"): // a test pattern, e.g. lavfi:testsrc
		in = []string{"-re", "-f", "lavfi", "-i", strings.TrimPrefix(f.Source, "lavfi:")}
	default: // a file, looped at its own speed
		in = []string{"-re", "-stream_loop", "-1", "-i", f.Source}
	}
	q := 2 + (100-f.Params.Quality)*29/100 // JPEG quality 100..1 -> ffmpeg's -q:v 2..31
	out := []string{
		"-an", "-vf", fmt.Sprintf("scale=%d:%d,fps=%d", f.Params.Width, f.Params.Height, f.Params.FPS),
		"-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-huffman", "default", "-q:v", fmt.Sprint(q),
		"-f", "image2pipe", "pipe:1",
	}
	return append(append([]string{"-hide_banner", "-loglevel", "error", "-nostdin"}, in...), out...)
}

// Run reads frames until ctx ends.
func (f *FFmpeg) Run(ctx context.Context) error {
	bin := f.Bin
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("ffmpeg"); err != nil {
			return errors.New("ffmpeg is not installed (apt-get install ffmpeg)")
		}
	}
	backoff := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := f.once(ctx, bin)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		f.Log.Warn("ffmpeg stopped; starting it again", "source", f.Source, "error", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	return nil
}

func (f *FFmpeg) once(ctx context.Context, bin string) error {
	cmd := exec.CommandContext(ctx, bin, f.Args()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	err = SplitJPEGs(out, func(jpeg []byte) {
		f.Frames++
		f.Ring.Add(Frame{JPEG: jpeg, At: time.Now()})
	})
	werr := cmd.Wait()
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return fmt.Errorf("%v: %s", werr, msg)
	}
	if err != nil {
		return err
	}
	return werr
}

// SplitJPEGs reads a stream of concatenated JPEG images (ffmpeg's
// image2pipe) and calls frame with each whole image. It walks the marker
// segments by their lengths and the entropy-coded data by its byte
// stuffing, so bytes that look like an EOI inside a table do not cut an
// image short.
func SplitJPEGs(r io.Reader, frame func([]byte)) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var cur []byte
	next := func() (byte, error) {
		b, err := br.ReadByte()
		if err == nil {
			cur = append(cur, b)
		}
		return b, err
	}
	eof := func(err error) error {
		if errors.Is(err, io.EOF) {
			return nil // a cut-off last image is dropped
		}
		return err
	}
	for {
		// Find SOI.
		cur = cur[:0]
		prev := byte(0)
		for {
			b, err := br.ReadByte()
			if err != nil {
				return eof(err)
			}
			if prev == 0xFF && b == 0xD8 {
				break
			}
			prev = b
		}
		cur = append(cur, 0xFF, 0xD8)
		if err := readImage(br, next); err != nil {
			if errors.Is(err, errNotJPEG) {
				continue // resynchronise on the next SOI
			}
			return eof(err)
		}
		frame(append([]byte(nil), cur...))
	}
}

var errNotJPEG = errors.New("not a JPEG marker")

// readImage reads the markers after SOI up to and including EOI.
func readImage(br *bufio.Reader, next func() (byte, error)) error {
	haveFF := false // the entropy-coded data ended at a marker's FF
	for {
		if !haveFF {
			b, err := next()
			if err != nil {
				return err
			}
			if b != 0xFF {
				return errNotJPEG
			}
		}
		haveFF = false
		m, err := next()
		for err == nil && m == 0xFF { // fill bytes
			m, err = next()
		}
		if err != nil {
			return err
		}
		switch {
		case m == 0xD9: // EOI
			return nil
		case m == 0x01 || (m >= 0xD0 && m <= 0xD7): // no length
			continue
		case m == 0x00 || m == 0xD8:
			return errNotJPEG
		}
		hi, err := next()
		if err != nil {
			return err
		}
		lo, err := next()
		if err != nil {
			return err
		}
		n := int(hi)<<8 | int(lo)
		if n < 2 {
			return errNotJPEG
		}
		for range n - 2 {
			if _, err := next(); err != nil {
				return err
			}
		}
		if m != 0xDA { // not SOS: the next marker follows
			continue
		}
		// Entropy-coded data: FF 00 is a data byte, FF D0-D7 a restart;
		// any other FF xx is the next marker.
		for {
			b, err := next()
			if err != nil {
				return err
			}
			if b != 0xFF {
				continue
			}
			x, err := br.Peek(1)
			if err != nil {
				return err
			}
			if x[0] == 0x00 || (x[0] >= 0xD0 && x[0] <= 0xD7) {
				next()
				continue
			}
			haveFF = true // a marker: its FF is read
			break
		}
	}
}
