package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/users"
)

const (
	defaultReadingLimit = 1000
	maxReadingLimit     = 10000
)

// listDevices: GET /api/v1/devices[?site=]
func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.deps.Devices.ListDevices(r.Context(), telemetry.DeviceFilter{Site: r.URL.Query().Get("site")})
}

// getDevice: GET /api/v1/devices/{id}
func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.deps.Devices.GetDevice(r.Context(), r.PathValue("id"))
}

// deleteDevice: DELETE /api/v1/devices/{id} (admins)
func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) (any, error) {
	if u := UserFrom(r.Context()); u == nil || u.Role != users.RoleAdmin {
		return nil, vigil.Errorf(vigil.EForbidden, "only admins can delete a device")
	}
	if err := s.deps.Devices.DeleteDevice(r.Context(), r.PathValue("id")); err != nil {
		return nil, err
	}
	return map[string]bool{"ok": true}, nil
}

// listTelemetry: GET /api/v1/devices/{id}/telemetry[?since=&limit=]
//
// since is an RFC 3339 time, Unix milliseconds, or a duration back from now
// ("15m"); without it the latest readings are returned. Readings come
// oldest first.
func (s *Server) listTelemetry(w http.ResponseWriter, r *http.Request) (any, error) {
	q := telemetry.ReadingQuery{DeviceID: r.PathValue("id"), Limit: defaultReadingLimit}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxReadingLimit {
			return nil, vigil.Errorf(vigil.EInvalid, "limit must be a whole number from 1 to %d", maxReadingLimit)
		}
		q.Limit = n
	}
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := parseSince(v, time.Now())
		if err != nil {
			return nil, err
		}
		q.Since = t
	}
	return s.deps.Devices.ListReadings(r.Context(), q)
}

func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
		return time.UnixMilli(n), nil
	}
	return time.Time{}, vigil.Errorf(vigil.EInvalid, "since must be an RFC 3339 time, Unix milliseconds or a duration such as 15m")
}

// BucketLister summarises readings by time (the store does).
type BucketLister interface {
	ListBuckets(ctx context.Context, deviceID string, since time.Time, step time.Duration) ([]telemetry.Bucket, error)
}

// maxBuckets bounds a summary's size.
const maxBuckets = 5000

// listBuckets: GET /api/v1/devices/{id}/telemetry/summary?since=24h[&step=5m]:
// average, min and max per step, for charts over long ranges. Without
// step, one is chosen for about 300 buckets.
func (s *Server) listBuckets(w http.ResponseWriter, r *http.Request) (any, error) {
	bl, ok := s.deps.Devices.(BucketLister)
	if !ok {
		return nil, vigil.Errorf(vigil.EUnavailable, "summaries are not available")
	}
	now := time.Now()
	since := now.Add(-24 * time.Hour)
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := parseSince(v, now)
		if err != nil {
			return nil, err
		}
		since = t
	}
	span := now.Sub(since)
	step := max(span/300, time.Second).Round(time.Second)
	if v := r.URL.Query().Get("step"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return nil, vigil.Errorf(vigil.EInvalid, "step must be a duration of at least 1s, such as 5m")
		}
		step = d
	}
	if span/step > maxBuckets {
		return nil, vigil.Errorf(vigil.EInvalid, "since and step make more than %d buckets; take a longer step", maxBuckets)
	}
	return bl.ListBuckets(r.Context(), r.PathValue("id"), since, step)
}
