package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/broker"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/watch"
)

// Security is vigil up's security side: its self-audits, the brokers it
// watches, and the MQTT clients its broker blocked.
type Security interface {
	RunAudit(ctx context.Context, trigger string) (store.AuditRecord, error)
	ListAudits(ctx context.Context, limit int) ([]store.AuditSummary, error)
	GetAudit(ctx context.Context, id int64) (store.AuditRecord, error)
	WatchStatus() []watch.Status
	Blocks() []broker.Block
	Unblock(key string) bool
}

func (s *Server) securityRoutes(api func(string, handlerFunc)) {
	sec := s.deps.Security
	if sec == nil {
		return
	}
	api("GET /api/v1/audits", func(w http.ResponseWriter, r *http.Request) (any, error) {
		n, err := limit(r, 50, 1000)
		if err != nil {
			return nil, err
		}
		list, err := sec.ListAudits(r.Context(), n)
		if list == nil {
			list = []store.AuditSummary{}
		}
		return list, err
	})
	api("GET /api/v1/audits/{id}", func(w http.ResponseWriter, r *http.Request) (any, error) {
		var id int64
		if v := r.PathValue("id"); v != "latest" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return nil, vigil.Errorf(vigil.EInvalid, "an audit id is a positive number, or latest")
			}
			id = n
		}
		return sec.GetAudit(r.Context(), id)
	})
	api("POST /api/v1/audits", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		rec, err := sec.RunAudit(r.Context(), "manual")
		if err != nil {
			return nil, err
		}
		s.log.Info("audit run", "by", UserFrom(r.Context()).Name, "grade", rec.Grade)
		return created{rec}, nil
	}))
	api("GET /api/v1/watch", func(w http.ResponseWriter, r *http.Request) (any, error) {
		st := sec.WatchStatus()
		if st == nil {
			st = []watch.Status{}
		}
		return st, nil
	})
	api("GET /api/v1/mqtt/blocks", func(w http.ResponseWriter, r *http.Request) (any, error) {
		b := sec.Blocks()
		if b == nil {
			b = []broker.Block{}
		}
		return b, nil
	})
	api("DELETE /api/v1/mqtt/blocks/{key}", admin(func(w http.ResponseWriter, r *http.Request) (any, error) {
		key := r.PathValue("key")
		if !sec.Unblock(key) {
			return nil, vigil.Errorf(vigil.ENotFound, "%q is not blocked", key)
		}
		s.log.Info("mqtt block lifted", "key", key, "by", UserFrom(r.Context()).Name)
		return map[string]bool{"ok": true}, nil
	}))
}
