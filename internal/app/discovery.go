package app

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/agentrt"
	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/detect"
	"github.com/vigilhq/vigil/internal/hadisc"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/store"
	"github.com/vigilhq/vigil/internal/telemetry"
	"github.com/vigilhq/vigil/internal/version"
)

// devicesAPI is the store's devices for the API: deleting one also
// removes its Home Assistant configs.
type devicesAPI struct {
	*store.Store
	a *App
}

func (d devicesAPI) DeleteDevice(ctx context.Context, id string) error {
	if err := d.Store.DeleteDevice(ctx, id); err != nil {
		return err
	}
	if p := d.a.disc.pub.Load(); p != nil {
		p.Remove(id)
	}
	d.a.log.Info("device deleted", "device", id)
	if c := d.a.disc.get(); c != nil && c.Again(id) {
		// Its bridge still announces it: it is back at once, without its
		// readings, and goes when its config does.
		d.a.log.Info("a deleted device is still announced by its bridge; remove it there", "device", id)
	}
	return nil
}

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

	// Vigil in Home Assistant: the publisher while it runs (on one
	// node: in a cluster, the leader), and whether it may (publish on,
	// or auto and something used the prefix).
	pub     atomic.Pointer[hadisc.Publisher]
	wanted  atomic.Bool
	started chan struct{} // closed when wanted turns true
	once    sync.Once
}

// want turns the publisher on (homeassistant.publish auto: something
// used the prefix).
func (d *discovery) want() {
	d.once.Do(func() {
		d.wanted.Store(true)
		close(d.started)
	})
}

// seen is told of every message under the discovery prefix.
func (d *discovery) seen(topic string, payload []byte) {
	prefix := d.app.cfg.HomeAssistant.Prefix
	if topic == prefix+"/status" {
		if string(payload) == "online" {
			d.want()
			if p := d.pub.Load(); p != nil {
				p.Announce() // Home Assistant started: it asks for every config
			}
		}
		return
	}
	if p := d.pub.Load(); p != nil {
		p.Found(topic, payload)
	}
	if t, ok := hadisc.ParseTopic(prefix, topic); ok && len(payload) > 0 && !strings.HasPrefix(t.ObjectID, "vigil_") {
		d.want()
	}
}

// observe hands a telemetry event to the publisher.
func (d *discovery) observe(ev telemetry.Event) {
	if p := d.pub.Load(); p != nil {
		p.Observe(ev)
	}
}

// runPublisher publishes Vigil for Home Assistant from when it is wanted
// until ctx ends; bus is where (this node's, or the leader's).
func (d *discovery) runPublisher(ctx context.Context, bus Bus) {
	a := d.app
	select {
	case <-d.started:
	case <-ctx.Done():
		return
	}
	avail := agentrt.NodeStateTopic(a.node.ID)
	p := hadisc.NewPublisher(hadisc.PublisherConfig{Prefix: a.cfg.HomeAssistant.Prefix, Availability: avail, Version: version.Version,
		Publish: func(topic string, payload []byte, retain bool) error { return bus.Publish(topic, payload, retain, 1) }},
		a.log.With("component", "homeassistant"))
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	devs, err := a.Store.ListDevices(lctx, telemetry.DeviceFilter{})
	if err != nil {
		a.log.Warn("Home Assistant: devices not listed", "error", err)
	}
	for _, dv := range devs {
		p.Device(dv)
	}
	sites, err := a.Store.ListSites(lctx)
	if err != nil {
		a.log.Warn("Home Assistant: sites not listed", "error", err)
	}
	for _, s := range sites {
		p.Site(s.Name, s.Armed)
	}
	cancel()
	p.SetHealth(d.health(ctx))
	d.pub.Store(p)
	p.Start()
	a.log.Info("Vigil announced to Home Assistant", "prefix", a.cfg.HomeAssistant.Prefix, "devices", len(devs), "sites", len(sites))
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.pub.CompareAndSwap(p, nil)
			p.Close()
			return
		case <-t.C:
			p.SetHealth(d.health(ctx))
		}
	}
}

// health is Vigil's state for Home Assistant.
func (d *discovery) health(ctx context.Context) hadisc.Health {
	a := d.app
	h := hadisc.Health{Broker: "ON"}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if list, err := a.Store.ListAudits(ctx, 1); err == nil && len(list) > 0 {
		h.Grade = list[0].Grade
	}
	if a.coord != nil {
		for _, ag := range a.coord.View().Agents {
			if ag.Status == "ready" || ag.Status == "starting" {
				h.Agents++
			}
		}
	}
	if a.health(ctx) != nil {
		h.Broker = "OFF"
	}
	return h
}

// eventChanged tells the publisher of an intrusion event or a clip.
func (d *discovery) eventChanged(kind string, v any) {
	p := d.pub.Load()
	if p == nil {
		return
	}
	switch x := v.(type) {
	case detect.Event:
		if kind == hub.EventEvent {
			p.Event(x.ID, x.Site, x.Sensor, x.Cameras, x.State == detect.EventRecording || x.State == detect.EventQueued)
		}
	case coord.Clip:
		if kind == hub.EventClip && x.State == coord.ClipReady && x.Thumbnail != "" {
			b, err := os.ReadFile(filepath.Join(d.app.Storage, filepath.FromSlash(x.Thumbnail)))
			if err == nil && len(b) < 1<<20 {
				p.Thumbnail(x.Site, x.Camera, b)
			}
		}
	}
}

// openDiscovery reads the discovery prefix, unless homeassistant.discovery
// is off. In a cluster the leader reads it (startConsumer from lead).
func (a *App) openDiscovery(ctx context.Context) error {
	if s, err := a.Store.GetSetting(ctx, placementsKey); err == nil && s != "" {
		if err := json.Unmarshal([]byte(s), &a.disc.placed); err != nil {
			a.log.Warn("placements of discovered devices not read", "error", err)
		}
	}
	h := a.cfg.HomeAssistant
	switch h.Publish {
	case conf.PublishOn:
		a.disc.want()
	case conf.PublishAuto:
		if !h.Discovery {
			// Nothing else reads the prefix: watch it for a user.
			if err := a.Bus.Subscribe(h.Prefix+"/#", func(topic string, payload []byte, _ string) { a.disc.seen(topic, payload) }); err != nil {
				return err
			}
		}
	}
	if a.clustered() {
		return nil // the leader reads and publishes (lead.go)
	}
	if h.Publish != conf.PublishOff {
		// Vigil's availability: online now, offline when it stops (on an
		// external broker, its connection's last will too).
		state := agentrt.NodeStateTopic(a.node.ID)
		if a.Broker != nil {
			if err := a.Bus.Publish(state, []byte("online"), true, 1); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { a.disc.runPublisher(ctx, a.Bus) })
		a.onClose(func() error {
			cancel()
			wg.Wait()
			if a.Broker != nil {
				a.Bus.Publish(state, []byte("offline"), true, 1)
			}
			return nil
		})
	}
	if !h.Discovery {
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

// Entities lists what the running consumer reads (httpapi.Discovery).
func (d *discovery) Entities() ([]hadisc.EntityView, []hadisc.Problem, bool) {
	c := d.get()
	if c == nil {
		return []hadisc.EntityView{}, []hadisc.Problem{}, false
	}
	return c.Entities(), c.Problems(), true
}

// Entity returns the discovered entity read as deviceID.
func (d *discovery) Entity(deviceID string) (hadisc.EntityView, bool) {
	c := d.get()
	if c == nil {
		return hadisc.EntityView{}, false
	}
	return c.Entity(deviceID)
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
	owned := func(id string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dv, err := a.Store.GetDevice(ctx, id)
		return err == nil && (dv.Meta == nil || dv.Meta.Discovery == nil)
	}
	c := hadisc.NewConsumer(hadisc.ConsumerConfig{Prefix: h.Prefix, Site: site, Place: d.place, Put: put, Seen: d.seen, Owned: owned},
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
		keys = slices.Concat(e.Device.Identifiers, keys)
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
