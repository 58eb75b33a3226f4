package app

import (
	"context"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/rtspcam"
)

// CameraTest is the answer to POST /api/v1/cameras/{site}/{camera}/test:
// whether an RTSP camera answers, and what its streams are.
type CameraTest struct {
	Camera    string        `json:"camera"`
	Reachable bool          `json:"reachable"`
	Main      *rtspcam.Info `json:"main,omitempty"`
	Sub       *rtspcam.Info `json:"sub,omitempty"`
	Error     string        `json:"error,omitempty"`
	TookMS    int64         `json:"took_ms"`
}

// testCamera asks an RTSP camera of vigil.yaml what it serves (RTSP
// DESCRIBE of its main stream and sub-stream), with its login; nothing
// of the login is returned.
func (a *App) testCamera(ctx context.Context, site, camera string) (any, error) {
	cam, ok := a.cfg.Cameras[camera]
	if !ok || cam.RTSP == nil || cam.Site != site {
		return nil, vigil.Errorf(vigil.ENotFound, "no RTSP camera %s/%s in vigil.yaml", site, camera)
	}
	r := cam.RTSP
	out := CameraTest{Camera: camera}
	start := time.Now()
	probe := func(u string) (*rtspcam.Info, error) {
		info, err := rtspcam.Probe(ctx, rtspcam.Source{URL: u, Username: r.Username, Password: r.Password}, 5*time.Second)
		if err != nil {
			return nil, err
		}
		return &info, nil
	}
	var err error
	if out.Main, err = probe(r.URL); err != nil {
		out.Error = err.Error()
	} else {
		out.Reachable = true
		if r.SubURL != "" {
			if out.Sub, err = probe(r.SubURL); err != nil {
				out.Error = "sub-stream: " + err.Error()
			}
		}
	}
	out.TookMS = time.Since(start).Milliseconds()
	a.log.Info("camera tested", "camera", camera, "reachable", out.Reachable, "error", out.Error)
	return out, nil
}
