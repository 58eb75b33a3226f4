package httpapi

import (
	"context"
	"net/http"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/hadisc"
	"github.com/vigilhq/vigil/internal/users"
)

// Discovery is Home Assistant discovery as the API shows it: the entities
// Vigil reads, the configs it does not, and where the user places a
// discovered device.
type Discovery interface {
	// Entities lists the discovered entities and the configs not read;
	// running is false when this node does not read discovery (off, or
	// another node leads).
	Entities() (entities []hadisc.EntityView, problems []hadisc.Problem, running bool)
	Entity(deviceID string) (hadisc.EntityView, bool)
	Place(ctx context.Context, deviceID string, p hadisc.Placement) (hadisc.EntityView, error)
}

// DiscoveryView is the body of GET /api/v1/discovery.
type DiscoveryView struct {
	Running  bool                `json:"running"`
	Entities []hadisc.EntityView `json:"entities"`
	Problems []hadisc.Problem    `json:"problems"`
}

func (s *Server) discoveryRoutes(api func(string, handlerFunc)) {
	if s.deps.Discovery == nil {
		return
	}
	api("GET /api/v1/discovery", func(w http.ResponseWriter, r *http.Request) (any, error) {
		es, ps, running := s.deps.Discovery.Entities()
		return DiscoveryView{Running: running, Entities: es, Problems: ps}, nil
	})
	api("GET /api/v1/devices/{id}/discovery", func(w http.ResponseWriter, r *http.Request) (any, error) {
		v, ok := s.deps.Discovery.Entity(r.PathValue("id"))
		if !ok {
			return nil, vigil.Errorf(vigil.ENotFound, "device %q is not read through Home Assistant discovery (here)", r.PathValue("id"))
		}
		return v, nil
	})
	api("PUT /api/v1/devices/{id}/placement", func(w http.ResponseWriter, r *http.Request) (any, error) {
		if u := UserFrom(r.Context()); u == nil || u.Role != users.RoleAdmin {
			return nil, vigil.Errorf(vigil.EForbidden, "only admins can place a device")
		}
		var p hadisc.Placement
		if err := decodeJSON(w, r, &p); err != nil {
			return nil, err
		}
		return s.deps.Discovery.Place(r.Context(), r.PathValue("id"), p)
	})
}
