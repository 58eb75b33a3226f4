package app

import (
	"context"
	"sort"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hub"
)

// planFor is a site's plan: the one set in the UI (kept in the store) if
// it still exists, else vigil.yaml's.
func (a *App) planFor(site string) (string, conf.Plan) {
	if p := a.Store.SitePlan(site); p != "" {
		if _, exists := a.cfg.Plans[p]; exists {
			return a.cfg.PlanNamed(p)
		}
	}
	return a.cfg.PlanFor(site)
}

// SetPlan sets a site's plan; "" goes back to vigil.yaml's. It applies to
// the next stream and the next retention pass.
func (a *App) SetPlan(ctx context.Context, site, plan string) (detect.Site, error) {
	if _, ok := a.cfg.Plans[plan]; plan != "" && !ok {
		return detect.Site{}, vigil.Errorf(vigil.EInvalid, "no plan %q; the plans are %v", plan, a.PlanNames())
	}
	s, err := a.Store.SetPlan(ctx, site, plan)
	if err != nil {
		return s, err
	}
	name, _ := a.planFor(site)
	a.Hub.Publish(hub.Message{Event: hub.EventSite, Data: hub.Site{Name: site, Armed: s.Armed, Plan: name}})
	a.coord.PlanChanged(site)
	return s, nil
}

// PlanNames lists the configured plans.
func (a *App) PlanNames() []string {
	var names []string
	for n := range a.cfg.Plans {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Plans returns every plan with its settings filled in.
func (a *App) Plans() map[string]conf.Plan {
	out := map[string]conf.Plan{}
	for n := range a.cfg.Plans {
		_, out[n] = a.cfg.PlanNamed(n)
	}
	return out
}
