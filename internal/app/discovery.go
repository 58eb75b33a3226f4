package app

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/hadisc"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// placementsKey is the settings row of the placements made in the UI.
const placementsKey = "homeassistant.placements"

// discovery is Vigil's side of Home Assistant MQTT discovery: the
// consumer of other projects' configs (on one node: in a cluster, the
// leader's) and the placements of discovered devices.
type discovery struct {
	app *App

	mu       sync.Mutex
	consumer *hadisc.Consumer
	placed   map[string]hadisc.Placement // made in the UI: by device identifier or Vigil id
}

// openDiscovery reads the discovery prefix, unless homeassistant.discovery
// is off. In a cluster the leader reads it (startConsumer from lead).
func (a *App) openDiscovery(ctx context.Context) error {
	a.disc = &discovery{app: a, placed: map[string]hadisc.Placement{}}
	if s, err := a.Store.GetSetting(ctx, placementsKey); err == nil && s != "" {
		if err := json.Unmarshal([]byte(s), &a.disc.placed); err != nil {
			a.log.Warn("placements of discovered devices not read", "error", err)
		}
	}
	if !a.cfg.HomeAssistant.Discovery || a.clustered() {
		return nil
	}
	put := func(ctx context.Context, ev telemetry.Event) error { return a.Telemetry.Put(ctx, ev, false) }
	c, err := a.disc.start(a.Bus, put)
	if err != nil {
		return err
	}
	a.onClose(c.Close)
	return nil
}

// reload reads the placements again (another node may have made some
// while it led).
func (d *discovery) reload(ctx context.Context) {
	s, err := d.app.Store.GetSetting(ctx, placementsKey)
	if err != nil || s == "" {
		return
	}
	placed := map[string]hadisc.Placement{}
	if err := json.Unmarshal([]byte(s), &placed); err != nil {
		d.app.log.Warn("placements of discovered devices not read", "error", err)
		return
	}
	d.mu.Lock()
	d.placed = placed
	d.mu.Unlock()
}

// start runs a consumer on bus.
func (d *discovery) start(bus Bus, put func(context.Context, telemetry.Event) error) (*hadisc.Consumer, error) {
	a := d.app
	h := a.cfg.HomeAssistant
	site := h.Site
	if site == "" {
		site = a.cfg.Telemetry.LegacySite
	}
	c := hadisc.NewConsumer(hadisc.ConsumerConfig{Prefix: h.Prefix, Site: site, Place: d.place, Put: put},
		bus, a.log.With("component", "discovery"), a.Registry)
	if err := c.Start(); err != nil {
		c.Close()
		return nil, err
	}
	d.mu.Lock()
	d.consumer = c
	d.mu.Unlock()
	return c, nil
}

// stop forgets a consumer that stopped (a leader that no longer leads).
func (d *discovery) stop(c *hadisc.Consumer) {
	d.mu.Lock()
	if d.consumer == c {
		d.consumer = nil
	}
	d.mu.Unlock()
	c.Close()
}

// get returns the running consumer, or nil.
func (d *discovery) get() *hadisc.Consumer {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.consumer
}

// place says where a discovered entity's device is: placed in the UI (by
// its device's identifiers, or its id), else in homeassistant.devices (by
// id, device name or identifiers).
func (d *discovery) place(id string, e *hadisc.Entity) (hadisc.Placement, bool) {
	keys := []string{id}
	if e.Device != nil {
		keys = append(e.Device.Identifiers, id)
	}
	d.mu.Lock()
	for _, k := range keys {
		if p, ok := d.placed[k]; ok {
			d.mu.Unlock()
			return p, true
		}
	}
	d.mu.Unlock()
	cfg := d.app.cfg.HomeAssistant.Devices
	if e.Device != nil && e.Device.Name != "" {
		keys = append(keys, e.Device.Name)
	}
	for _, k := range keys {
		if p, ok := cfg[k]; ok {
			return hadisc.Placement(p), true
		}
	}
	return hadisc.Placement{}, false
}

// Place places a discovered device (every entity of its physical device)
// in a site and zone, from the UI; an empty site takes the placement
// away.
func (d *discovery) Place(ctx context.Context, deviceID string, p hadisc.Placement) (hadisc.EntityView, error) {
	c := d.get()
	if c == nil {
		return hadisc.EntityView{}, vigil.Errorf(vigil.EUnavailable, "discovery runs on the node that leads; try again there")
	}
	v, ok := c.Entity(deviceID)
	if !ok {
		return v, vigil.Errorf(vigil.ENotFound, "device %q is not a discovered device", deviceID)
	}
	if p.Site != "" && (!vigil.ValidName(p.Site) || vigil.Reserved(p.Site)) {
		return v, vigil.Errorf(vigil.EInvalid, "site %q must be 1-64 letters, digits, '-', '_' or '.'", p.Site)
	}
	if p.Zone != "" && !vigil.ValidName(p.Zone) {
		return v, vigil.Errorf(vigil.EInvalid, "zone %q must be 1-64 letters, digits, '-', '_' or '.'", p.Zone)
	}
	key := deviceID
	if v.Entity.Device != nil && len(v.Entity.Device.Identifiers) > 0 {
		key = v.Entity.Device.Identifiers[0]
	}
	d.mu.Lock()
	next := make(map[string]hadisc.Placement, len(d.placed)+1)
	for k, x := range d.placed {
		next[k] = x
	}
	if p.Site == "" {
		delete(next, key)
	} else {
		next[key] = p
	}
	b, _ := json.Marshal(next)
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d.app.Store.SetSetting(ctx, placementsKey, string(b)); err != nil {
		return v, err
	}
	d.mu.Lock()
	d.placed = next
	d.mu.Unlock()
	c.Replace()
	v, _ = c.Entity(deviceID)
	return v, nil
}

// zoneTriggers returns, per zone, the device classes that record there
// besides motion, occupancy and presence.
func zoneTriggers(zones map[string]conf.Zone) map[string][]string {
	out := map[string][]string{}
	for name, z := range zones {
		out[name] = z.Triggers
	}
	return out
}
