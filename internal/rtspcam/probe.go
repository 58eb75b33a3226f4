// Package rtspcam is Vigil's side of the IP cameras people buy: RTSP
// sources with H.264 or H.265 video (and often AAC audio), which agents
// will pull and record without re-encoding (issue 14). This first part
// asks a camera what it serves.
package rtspcam

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// Source is a camera's RTSP address and login. The URL holds no login
// (they live apart, from env or a file, and are never shown).
type Source struct {
	URL      string
	Username string
	Password string
}

// Redacted is the source's URL without any login, for logs and the API.
func (s Source) Redacted() string { return Redact(s.URL) }

// Redact removes a login from an RTSP URL (one pasted with user:pass@).
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an unreadable URL)"
	}
	u.User = nil
	return u.String()
}

// Info is what a camera serves.
type Info struct {
	URL    string  `json:"url"`   // redacted
	Video  string  `json:"video"` // H264, H265, or another codec's name; "" without video
	Width  int     `json:"width,omitempty"`
	Height int     `json:"height,omitempty"`
	FPS    float64 `json:"fps,omitempty"` // from the SPS's timing, when it says
	Audio  string  `json:"audio,omitempty"`
	// Recordable: the video is H.264 or H.265, which agents copy as it is.
	Recordable bool `json:"recordable"`
}

// Probe asks the camera for its description (RTSP DESCRIBE): codec,
// resolution and frame rate from the parameter sets it announces.
func Probe(ctx context.Context, src Source, timeout time.Duration) (Info, error) {
	info := Info{URL: src.Redacted()}
	u, err := base.ParseURL(src.URL)
	if err != nil {
		return info, fmt.Errorf("%s is not an RTSP URL: %w", info.URL, errors.Unwrap(err))
	}
	if u.User != nil {
		return info, fmt.Errorf("%s: put the login in the camera's username and password, not in its URL", info.URL)
	}
	if src.Username != "" {
		u.User = url.UserPassword(src.Username, src.Password)
	}
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host, ReadTimeout: timeout, WriteTimeout: timeout}
	if err := c.Start(); err != nil {
		return info, fmt.Errorf("%s: %w", info.URL, clean(err, src))
	}
	defer c.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			c.Close()
		case <-done:
		}
	}()
	desc, _, err := c.Describe(u)
	if err != nil {
		if ctx.Err() != nil {
			return info, ctx.Err()
		}
		return info, fmt.Errorf("%s: %w", info.URL, clean(err, src))
	}
	for _, m := range desc.Medias {
		for _, f := range m.Formats {
			switch f := f.(type) {
			case *format.H264:
				if info.Video != "" {
					continue
				}
				info.Video, info.Recordable = "H264", true
				if sps, _ := f.SafeParams(); len(sps) > 0 {
					var s h264.SPS
					if s.Unmarshal(sps) == nil {
						info.Width, info.Height, info.FPS = s.Width(), s.Height(), round(s.FPS())
					}
				}
			case *format.H265:
				if info.Video != "" {
					continue
				}
				info.Video, info.Recordable = "H265", true
				if _, sps, _ := f.SafeParams(); len(sps) > 0 {
					var s h265.SPS
					if s.Unmarshal(sps) == nil {
						info.Width, info.Height, info.FPS = s.Width(), s.Height(), round(s.FPS())
					}
				}
			case *format.MPEG4Audio:
				if info.Audio == "" {
					info.Audio = "AAC"
				}
			default:
				if m.Type == "video" && info.Video == "" {
					info.Video = f.Codec()
				} else if m.Type == "audio" && info.Audio == "" {
					info.Audio = f.Codec()
				}
			}
		}
	}
	return info, nil
}

func round(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1000 {
		return 0
	}
	return math.Round(f*100) / 100
}

// clean removes the password from an error that might quote it.
func clean(err error, src Source) error {
	msg := err.Error()
	if src.Password != "" && strings.Contains(msg, src.Password) {
		return errors.New(strings.ReplaceAll(msg, src.Password, "***"))
	}
	return err
}
