package hadisc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil"
	"github.com/vigilhq/vigil/internal/ratelog"
	"github.com/vigilhq/vigil/internal/telemetry"
)

// Bus is the broker the consumer reads: the embedded broker in-process or
// Vigil's connection to an external one. A subscription gets the retained
// messages of its filter.
type Bus interface {
	Subscribe(filter string, h func(topic string, payload []byte, clientID string)) error
	Unsubscribe(filter string) error
}

// Placement is where a discovered device is: its site and detection zone.
type Placement struct {
	Site string `json:"site"`
	Zone string `json:"zone,omitempty"`
}

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	Prefix string // the discovery prefix, "homeassistant"
	Site   string // the site of a device nobody placed
	// Place says where an entity's device is, if the user said so (by
	// its Vigil id, its device's name or identifiers); ok false: Site,
	// no zone.
	Place func(id string, e *Entity) (p Placement, ok bool)
	// Put hands an event to the telemetry pipeline.
	Put func(ctx context.Context, ev telemetry.Event) error
	// Seen, if set, is told of every message under the prefix (Vigil's
	// own discovery is on when something uses the prefix).
	Seen func(topic string, payload []byte)
	// Owned, if set, reports whether a device id belongs to a device that
	// is not read through discovery: a config claiming it gets another id.
	Owned func(id string) bool
	Now   func() time.Time
}

// Consumer reads Home Assistant discovery configs and turns the state
// messages of their sensors and binary sensors into Vigil readings.
type Consumer struct {
	cfg ConsumerConfig
	bus Bus
	log *slog.Logger
	rl  *ratelog.Logger
	m   metrics

	// The configs to read, in order. The broker's handler only appends
	// (never waits): on an external broker it runs on the connection's
	// reader, which must stay free to read the SUBACKs the consumer
	// waits for when it subscribes to an entity's topics.
	qmu   sync.Mutex
	queue []message
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	entities map[string]*state   // by Entity.Key
	byID     map[string]*state   // by Vigil device id
	byTopic  map[string][]*state // state and availability topics
	problems map[string]string   // config topic or key -> why it is not read
	// devices: what the configs said of each physical device, merged by
	// identifier as Home Assistant's device registry does (Tasmota names
	// a device in one config and only identifies it in the others).
	devices map[string]*Device
	last    map[string][]byte // the last message on each subscribed topic
	// subscribed: the state and availability topics subscribed to.
	subscribed map[string]bool
}

type message struct {
	topic   string
	payload []byte
	done    chan struct{} // a barrier (Sync): closed when reached
}

// state is a discovered entity and what Vigil knows of it now.
type state struct {
	*Entity
	id    string
	place Placement
	// avail: per availability topic, -1 unknown, 0 not available, 1 available;
	// latest is the index of the topic heard last.
	avail     []int8
	latest    int
	available bool // as last told to the pipeline
	lastState time.Time
	expired   bool
	lastErr   string
	errors    int64
	value     *float64
	// Compiled templates: the value's and each availability topic's
	// (nil: none), and why one does not compile.
	tpl      *Template
	tplErr   error
	availTpl []*Template
}

// compile compiles s's templates once.
func (s *state) compile() {
	if s.HasTemplate {
		s.tpl, s.tplErr = Compile(s.ValueTemplate)
	}
	s.availTpl = make([]*Template, len(s.Availability))
	for i, a := range s.Availability {
		if a.ValueTemplate != "" {
			t, err := Compile(a.ValueTemplate)
			if err != nil && s.tplErr == nil {
				s.tplErr = fmt.Errorf("availability template: %w", err)
			}
			s.availTpl[i] = t
		}
	}
}

type metrics struct {
	entities prometheus.Gauge
	errors   *prometheus.CounterVec
	configs  *prometheus.CounterVec
}

// register registers col, or returns the collector registered before it
// (a consumer made again: a node leading again).
func register[C prometheus.Collector](reg prometheus.Registerer, col C, log *slog.Logger) C {
	if reg == nil {
		return col
	}
	if err := reg.Register(col); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		log.Warn("register discovery metrics", "error", err)
	}
	return col
}

// NewConsumer returns a consumer; Start subscribes it.
func NewConsumer(cfg ConsumerConfig, bus Bus, log *slog.Logger, reg prometheus.Registerer) *Consumer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Consumer{cfg: cfg, bus: bus, log: log, rl: ratelog.New(log, time.Minute),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		entities: map[string]*state{}, byID: map[string]*state{}, byTopic: map[string][]*state{}, problems: map[string]string{},
		devices: map[string]*Device{}, last: map[string][]byte{}, subscribed: map[string]bool{}}
	c.m.errors = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_discovery_errors_total",
		Help: "State messages of discovered entities that could not be read, by reason (template, value, payload)."}, []string{"reason"}), log)
	c.m.configs = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_discovery_configs_total",
		Help: "Home Assistant discovery configs received, by result (read, ignored, invalid, removed, dropped)."}, []string{"result"}), log)
	c.m.entities = register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_discovery_entities",
		Help: "Entities Vigil reads through Home Assistant discovery."}), log)
	c.m.entities.Set(0)
	return c
}

// Start subscribes to the discovery prefix; the retained configs come at
// once and are read in order on the consumer's goroutine.
func (c *Consumer) Start() error {
	go c.run()
	return c.bus.Subscribe(c.cfg.Prefix+"/#", func(topic string, payload []byte, _ string) {
		if c.cfg.Seen != nil {
			c.cfg.Seen(topic, payload)
		}
		if _, ok := ParseTopic(c.cfg.Prefix, topic); !ok {
			return
		}
		if len(payload) > MaxConfig {
			c.m.configs.WithLabelValues("invalid").Inc()
			c.rl.Warn("config", "discovery config not read", "topic", topic, "error", fmt.Sprintf("%d bytes; at most %d", len(payload), MaxConfig))
			return
		}
		// Copied: the broker may reuse its buffer.
		c.enqueue(message{topic: topic, payload: slices.Clone(payload)})
	})
}

// maxQueue is how many configs may wait to be read (each at most
// MaxConfig); more (a flood) are dropped, counted and logged. maxProblems
// is how many configs not read are listed; maxEntities how many are read.
const (
	maxQueue    = 4096
	maxProblems = 4096
	maxEntities = 100000
)

func (c *Consumer) enqueue(m message) {
	c.qmu.Lock()
	full := len(c.queue) >= maxQueue && m.done == nil
	if !full {
		c.queue = append(c.queue, m)
	}
	c.qmu.Unlock()
	if full {
		c.m.configs.WithLabelValues("dropped").Inc()
		c.rl.Warn("flood", "discovery config dropped: too many waiting to be read", "topic", m.topic, "waiting", maxQueue)
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Sync returns once the configs received before it are read.
func (c *Consumer) Sync(ctx context.Context) error {
	done := make(chan struct{})
	c.enqueue(message{done: done})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops reading and ends the consumer's subscriptions.
func (c *Consumer) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
		close(c.stop)
	}
	<-c.done
	c.bus.Unsubscribe(c.cfg.Prefix + "/#")
	c.mu.Lock()
	topics := make([]string, 0, len(c.subscribed))
	for t := range c.subscribed {
		topics = append(topics, t)
	}
	c.byTopic, c.subscribed = map[string][]*state{}, map[string]bool{}
	c.mu.Unlock()
	c.m.entities.Set(0) // read by the next consumer, if any (another leader)
	for _, t := range topics {
		c.bus.Unsubscribe(t)
	}
	return nil
}

func (c *Consumer) run() {
	defer close(c.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
			for {
				c.qmu.Lock()
				if len(c.queue) == 0 {
					c.queue = nil // let a flood's array go
					c.qmu.Unlock()
					break
				}
				m := c.queue[0]
				c.queue = c.queue[1:]
				c.qmu.Unlock()
				if m.done != nil {
					close(m.done)
					continue
				}
				c.config(m.topic, m.payload)
				select {
				case <-c.stop:
					return
				default:
				}
			}
		case <-tick.C:
			c.expire()
		}
	}
}

// config reads one discovery message: new, changed and removed entities.
func (c *Consumer) config(topic string, payload []byte) {
	var next []*Entity
	if len(payload) > 0 {
		cfg, err := Parse(c.cfg.Prefix, topic, payload)
		if err != nil {
			c.m.configs.WithLabelValues("invalid").Inc()
			c.rl.Warn("config", "discovery config not read", "topic", topic, "error", err)
			c.mu.Lock()
			if len(c.problems) < maxProblems {
				c.problems[topic] = err.Error()
			}
			c.mu.Unlock()
			return
		}
		next = cfg.Entities
		c.mu.Lock()
		delete(c.problems, topic)
		for k := range c.problems {
			if strings.HasPrefix(k, topic+"#") {
				delete(c.problems, k)
			}
		}
		for k, why := range cfg.Ignored {
			if len(c.problems) < maxProblems {
				c.problems[k] = why
			}
			c.m.configs.WithLabelValues("ignored").Inc()
		}
		c.mu.Unlock()
	} else {
		c.mu.Lock()
		delete(c.problems, topic)
		c.mu.Unlock()
	}
	keep := map[string]bool{}
	for _, e := range next {
		c.mu.Lock()
		full := len(c.entities) >= maxEntities && c.entities[e.Key] == nil
		c.mu.Unlock()
		if full {
			c.rl.Warn("entities", "discovered entity not read: too many", "key", e.Key, "at_most", maxEntities)
			continue
		}
		keep[e.Key] = true
		c.add(e)
		c.m.configs.WithLabelValues("read").Inc()
	}
	// Entities this topic declared before and no longer does.
	c.mu.Lock()
	var gone []*state
	for k, s := range c.entities {
		if s.ConfigTopic == topic && !keep[k] {
			gone = append(gone, s)
		}
	}
	c.mu.Unlock()
	for _, s := range gone {
		c.remove(s)
		c.m.configs.WithLabelValues("removed").Inc()
	}
}

// add registers an entity, or updates one with the same key: its device
// is announced (Meta) and its topics subscribed.
func (c *Consumer) add(e *Entity) {
	c.mu.Lock()
	old := c.entities[e.Key]
	id := ""
	if old != nil {
		id = old.id
		if DeviceID(e) != id && c.byID[DeviceID(e)] == nil {
			id = "" // its unique_id changed: a new Vigil device
		}
	}
	if id == "" {
		id = DeviceID(e)
		if o := c.byID[id]; (o != nil && o.Key != e.Key) || (o == nil && c.cfg.Owned != nil && c.cfg.Owned(id)) {
			// Two configs with one unique_id, or one naming a device of
			// Vigil's own: not taken over.
			id = deviceIDWithKey(id, e.Key)
		}
	}
	var others []telemetry.Event
	if e.Device != nil && len(e.Device.Identifiers) > 0 {
		merged, changed := c.mergeDevice(e.Device)
		e.Device = merged
		if changed {
			// The device's other entities are named again.
			for _, o := range c.entities {
				if o.Key != e.Key && o.Device != nil && sharesID(o.Device, merged) {
					o.Device = merged
					others = append(others, c.metaEvent(o))
				}
			}
		}
	}
	s := &state{Entity: e, id: id, latest: -1}
	s.compile()
	if s.tplErr != nil {
		s.lastErr = s.tplErr.Error()
	}
	s.avail = make([]int8, len(e.Availability))
	for i := range s.avail {
		s.avail[i] = -1
	}
	if old != nil {
		s.lastState, s.value = old.lastState, old.value
		s.expired = old.expired
		if slices.Equal(availTopics(old.Entity), availTopics(e)) {
			copy(s.avail, old.avail)
			s.latest = old.latest
		}
		c.unindex(old)
		if old.id != id {
			delete(c.byID, old.id)
		}
	}
	if s.lastState.IsZero() && e.ExpireAfter > 0 {
		// Home Assistant counts expire_after from the entity's start:
		// a device that died while Vigil was down is not online forever.
		s.lastState = c.cfg.Now()
	}
	s.place = c.placement(s)
	s.available = c.availableLocked(s) && !s.expired
	c.entities[e.Key] = s
	c.byID[id] = s
	c.m.entities.Set(float64(len(c.entities)))
	topics := c.index(s)
	ev := c.metaEvent(s)
	// Topics other entities subscribed to: what they last said (an
	// updated entity kept its own topics' state).
	var replay []telemetry.Event
	for _, t := range s.topics() {
		if p, ok := c.last[t]; ok && !slices.Contains(topics, t) && (old == nil || !slices.Contains(old.topics(), t)) {
			replay = c.deliver(s, t, p, c.cfg.Now(), replay)
		}
	}
	available := s.available
	c.mu.Unlock()

	c.put(ev)
	for _, o := range others {
		c.put(o)
	}
	if !available {
		c.put(telemetry.Event{DeviceID: s.id, Site: s.place.Site, Time: c.cfg.Now(), Status: telemetry.StatusOffline})
	}
	for _, ev := range replay {
		c.put(ev)
	}
	// Subscribed after the entity is known: the retained state and
	// availability that come at once find it.
	for _, t := range topics {
		if err := c.bus.Subscribe(t, c.onMessage); err != nil {
			c.log.Warn("subscribe to a discovered entity's topic", "topic", t, "error", err)
		}
	}
	if old != nil {
		c.unsubscribeUnused(old)
	}
}

// mergeDevice merges what a config says of a device into what earlier
// configs said (each field the newest non-empty one); the caller holds mu.
func (c *Consumer) mergeDevice(d *Device) (*Device, bool) {
	var old *Device
	for _, id := range d.Identifiers {
		if o := c.devices[id]; o != nil {
			old = o
			break
		}
	}
	m := &Device{}
	if old != nil {
		*m = *old
		m.Identifiers = slices.Clone(old.Identifiers) // appended to below
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&m.Name, d.Name)
	set(&m.Model, d.Model)
	set(&m.Manufacturer, d.Manufacturer)
	set(&m.SWVersion, d.SWVersion)
	set(&m.ViaDevice, d.ViaDevice)
	set(&m.SuggestedArea, d.SuggestedArea)
	for _, id := range d.Identifiers {
		if !slices.Contains(m.Identifiers, id) && len(m.Identifiers) < 16 {
			m.Identifiers = append(m.Identifiers, id)
		}
	}
	if len(c.devices) < 100000 {
		for _, id := range m.Identifiers {
			c.devices[id] = m
		}
	}
	changed := old != nil && (old.Name != m.Name || old.Model != m.Model || old.Manufacturer != m.Manufacturer || old.ViaDevice != m.ViaDevice)
	return m, changed
}

func sharesID(a, b *Device) bool {
	for _, id := range a.Identifiers {
		if slices.Contains(b.Identifiers, id) {
			return true
		}
	}
	return false
}

func availTopics(e *Entity) []string {
	out := make([]string, len(e.Availability))
	for i, a := range e.Availability {
		out[i] = a.Topic
	}
	return out
}

// remove forgets an entity whose config was deleted: its Vigil device
// stays, with its readings, marked removed and offline.
func (c *Consumer) remove(s *state) {
	c.mu.Lock()
	if c.entities[s.Key] != s {
		c.mu.Unlock()
		return
	}
	delete(c.entities, s.Key)
	delete(c.byID, s.id)
	c.m.entities.Set(float64(len(c.entities)))
	c.unindex(s)
	ev := c.metaEvent(s)
	ev.Meta.Discovery.Removed = true
	c.mu.Unlock()
	c.put(ev)
	c.put(telemetry.Event{DeviceID: s.id, Site: s.place.Site, Time: c.cfg.Now(), Status: telemetry.StatusOffline})
	c.unsubscribeUnused(s)
}

// index files s under its topics and returns those not subscribed to
// yet (now marked subscribed); the caller holds mu.
func (c *Consumer) index(s *state) []string {
	var fresh []string
	for _, t := range s.topics() {
		if !c.subscribed[t] {
			c.subscribed[t] = true
			fresh = append(fresh, t)
		}
		if !slices.Contains(c.byTopic[t], s) {
			c.byTopic[t] = append(c.byTopic[t], s)
		}
	}
	return fresh
}

func (c *Consumer) unindex(s *state) {
	for _, t := range s.topics() {
		l := slices.DeleteFunc(c.byTopic[t], func(x *state) bool { return x == s })
		if len(l) == 0 {
			delete(c.byTopic, t)
		} else {
			c.byTopic[t] = l
		}
	}
}

// unsubscribeUnused ends the subscriptions of s's topics that no entity
// uses any more.
func (c *Consumer) unsubscribeUnused(s *state) {
	for _, t := range s.topics() {
		c.mu.Lock()
		unused := len(c.byTopic[t]) == 0 && c.subscribed[t]
		if unused {
			delete(c.subscribed, t)
			delete(c.last, t)
		}
		c.mu.Unlock()
		if unused {
			if err := c.bus.Unsubscribe(t); err != nil {
				c.log.Debug("unsubscribe", "topic", t, "error", err)
			}
		}
	}
}

func (s *state) topics() []string {
	out := []string{s.StateTopic}
	for _, a := range s.Availability {
		if !slices.Contains(out, a.Topic) {
			out = append(out, a.Topic)
		}
	}
	return out
}

func (c *Consumer) placement(s *state) Placement {
	if c.cfg.Place != nil {
		if p, ok := c.cfg.Place(s.id, s.Entity); ok {
			if p.Site == "" {
				p.Site = c.cfg.Site
			}
			return p
		}
	}
	return Placement{Site: c.cfg.Site}
}

// Again announces a discovered device again (its meta), as when its
// config came: after it was deleted, while its config still says it
// exists. It reports whether deviceID is a discovered device.
func (c *Consumer) Again(deviceID string) bool {
	c.mu.Lock()
	s := c.byID[deviceID]
	var ev telemetry.Event
	if s != nil {
		ev = c.metaEvent(s)
	}
	c.mu.Unlock()
	if s == nil {
		return false
	}
	c.put(ev)
	return true
}

// Replace places the devices again (the user moved one to another site or
// zone): their metas are announced again.
func (c *Consumer) Replace() {
	c.mu.Lock()
	var evs []telemetry.Event
	for _, s := range c.entities {
		p := c.placement(s)
		if p != s.place {
			s.place = p
			evs = append(evs, c.metaEvent(s))
		}
	}
	c.mu.Unlock()
	for _, ev := range evs {
		c.put(ev)
	}
}

// motionClasses make a discovered binary sensor a presence sensor, which
// records in an armed zone like the paper's IR sensor.
var motionClasses = map[string]bool{"motion": true, "occupancy": true, "presence": true}

// Type is the Vigil device type of an entity: its device class, or
// "sensor" / "binary" without one.
func Type(e *Entity) string {
	t := e.DeviceClass
	if t == "" || len(t) > 32 || strings.ContainsFunc(t, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') }) {
		if e.Component == BinarySensor {
			return "binary"
		}
		return "sensor"
	}
	return t
}

func (c *Consumer) metaEvent(s *state) telemetry.Event {
	e := s.Entity
	d := &telemetry.Discovery{Component: e.Component, DeviceClass: e.DeviceClass, UniqueID: e.UniqueID,
		ConfigTopic: e.ConfigTopic, Key: e.Key, StateTopic: e.StateTopic, Origin: e.Origin}
	if e.Device != nil {
		d.DeviceName, d.Model, d.Manufacturer, d.ViaDevice = e.Device.Name, e.Device.Model, e.Device.Manufacturer, e.Device.ViaDevice
		d.Identifiers = e.Device.Identifiers
	}
	m := &telemetry.Meta{Name: clipRunes(e.FriendlyName(), 128), Zone: s.place.Zone, Discovery: d}
	if e.Component == BinarySensor && motionClasses[e.DeviceClass] {
		m.Capabilities = []string{telemetry.CapMotion}
	}
	return telemetry.Event{DeviceID: s.id, Site: s.place.Site, Type: Type(e), Units: e.Unit, Time: c.cfg.Now(), Meta: m}
}

func (c *Consumer) put(ev telemetry.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.cfg.Put(ctx, ev); err != nil && !errors.Is(err, telemetry.ErrClosed) {
		c.log.Warn("discovered device's event not stored", "device", ev.DeviceID, "error", err)
	}
}

// onMessage reads a state or availability message of discovered entities.
// It runs on the broker's delivery goroutine.
func (c *Consumer) onMessage(topic string, payload []byte, _ string) {
	now := c.cfg.Now()
	var evs []telemetry.Event
	c.mu.Lock()
	if l := c.byTopic[topic]; len(l) > 0 {
		// Kept for an entity that comes later on the same topic (the
		// broker sends retained messages to a subscription only once).
		c.last[topic] = slices.Clone(payload[:min(len(payload), MaxConfig)])
		for _, s := range l {
			evs = c.deliver(s, topic, payload, now, evs)
		}
	}
	c.mu.Unlock()
	for _, ev := range evs {
		c.put(ev)
	}
}

// deliver reads a message on one of s's topics; the caller holds mu.
func (c *Consumer) deliver(s *state, topic string, payload []byte, now time.Time, evs []telemetry.Event) []telemetry.Event {
	for i, a := range s.Availability {
		if a.Topic == topic {
			c.availabilityMessage(s, i, payload)
		}
	}
	if s.StateTopic == topic {
		if ev, ok := c.stateMessage(s, payload, now); ok {
			evs = append(evs, ev)
		}
	}
	if av := c.availableLocked(s) && !s.expired; av != s.available {
		s.available = av
		st := telemetry.StatusOffline
		if av {
			st = telemetry.StatusOnline
		}
		evs = append(evs, telemetry.Event{DeviceID: s.id, Site: s.place.Site, Time: now, Status: st})
	}
	return evs
}

func (c *Consumer) availabilityMessage(s *state, i int, payload []byte) {
	a := s.Availability[i]
	v := string(payload)
	if a.ValueTemplate != "" {
		t := s.availTpl[i]
		if t == nil {
			c.fail(s, "template", s.tplErr.Error())
			return
		}
		out, err := t.Render(payload)
		if err != nil {
			c.fail(s, "template", "availability template: "+err.Error())
			return
		}
		v = out
	}
	switch v {
	case a.PayloadAvailable:
		s.avail[i] = 1
	case a.PayloadNotAvailable:
		s.avail[i] = 0
	default:
		return // Home Assistant ignores it too
	}
	s.latest = i
}

// availableLocked is Home Assistant's rule: no availability topic means
// available; "latest" takes the last message of any of them; "all" needs
// each to say available; "any" one of them.
func (c *Consumer) availableLocked(s *state) bool {
	if len(s.avail) == 0 {
		return true
	}
	switch s.AvailabilityMode {
	case "all":
		for _, v := range s.avail {
			if v != 1 {
				return false
			}
		}
		return true
	case "any":
		return slices.Contains(s.avail, 1)
	}
	return s.latest >= 0 && s.avail[s.latest] == 1
}

// stateMessage turns a state message into a reading.
func (c *Consumer) stateMessage(s *state, payload []byte, now time.Time) (telemetry.Event, bool) {
	v := string(payload)
	if s.HasTemplate {
		if s.tpl == nil {
			c.fail(s, "template", "value_template: "+s.tplErr.Error())
			return telemetry.Event{}, false
		}
		out, err := s.tpl.Render(payload)
		if err != nil {
			c.fail(s, "template", "value_template: "+err.Error())
			return telemetry.Event{}, false
		}
		v = out
	}
	s.lastState, s.expired = now, false
	var value float64
	switch {
	case v == "" || v == "None" || v == "unknown" || v == "unavailable":
		return telemetry.Event{}, false // Home Assistant's "unknown": no reading
	case s.Component == BinarySensor && v == s.PayloadOn:
		value = 1
	case s.Component == BinarySensor && v == s.PayloadOff:
		value = 0
	case s.Component == BinarySensor:
		c.fail(s, "value", "state "+clip(v)+" is neither payload_on "+clip(s.PayloadOn)+" nor payload_off "+clip(s.PayloadOff))
		return telemetry.Event{}, false
	default:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			c.fail(s, "value", "state "+clip(v)+" is not a number")
			return telemetry.Event{}, false
		}
		value = f
	}
	s.value = &value
	s.lastErr = ""
	return telemetry.Event{DeviceID: s.id, Site: s.place.Site, Type: Type(s.Entity), Time: now,
		Reading: &telemetry.Reading{DeviceID: s.id, Time: now, Received: now, Value: value, Units: s.Unit}}, true
}

// fail counts an entity's unreadable message and keeps why, for its
// device page.
func (c *Consumer) fail(s *state, reason, detail string) {
	s.errors++
	s.lastErr = detail
	c.m.errors.WithLabelValues(reason).Inc()
	c.rl.Warn("state:"+reason, "discovered entity's message not read", "device", s.id, "config", s.ConfigTopic, "error", detail)
}

// expire marks offline the entities whose expire_after passed without a
// state message.
func (c *Consumer) expire() {
	now := c.cfg.Now()
	var evs []telemetry.Event
	c.mu.Lock()
	for _, s := range c.entities {
		if s.ExpireAfter <= 0 || s.expired || s.lastState.IsZero() || now.Sub(s.lastState) < s.ExpireAfter {
			continue
		}
		s.expired = true
		if s.available {
			s.available = false
			evs = append(evs, telemetry.Event{DeviceID: s.id, Site: s.place.Site, Time: now, Status: telemetry.StatusOffline})
		}
	}
	c.mu.Unlock()
	for _, ev := range evs {
		c.put(ev)
	}
}

// EntityView is what the API shows of a discovered entity.
type EntityView struct {
	DeviceID  string    `json:"device_id"`
	Entity    *Entity   `json:"entity"`
	Site      string    `json:"site"`
	Zone      string    `json:"zone,omitempty"`
	Available bool      `json:"available"`
	Value     *float64  `json:"value,omitempty"`
	LastState time.Time `json:"last_state,omitzero"`
	Error     string    `json:"error,omitempty"` // why its last message was not read
	Errors    int64     `json:"errors"`
}

// Problem is a config, or a component of one, that Vigil does not read.
type Problem struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Entities lists the discovered entities, by device id.
func (c *Consumer) Entities() []EntityView {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]EntityView, 0, len(c.entities))
	for _, s := range c.entities {
		out = append(out, c.view(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceID < out[j].DeviceID })
	return out
}

// Entity returns the entity read as a Vigil device.
func (c *Consumer) Entity(deviceID string) (EntityView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.byID[deviceID]
	if s == nil {
		return EntityView{}, false
	}
	return c.view(s), true
}

func (c *Consumer) view(s *state) EntityView {
	e := *s.Entity // a copy: a later config may name its device again
	return EntityView{DeviceID: s.id, Entity: &e, Site: s.place.Site, Zone: s.place.Zone, Available: s.available,
		Value: s.value, LastState: s.lastState, Error: s.lastErr, Errors: s.errors}
}

// Problems lists the configs not read and why.
func (c *Consumer) Problems() []Problem {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Problem, 0, len(c.problems))
	for k, r := range c.problems {
		out = append(out, Problem{Key: k, Reason: r})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// DeviceID is the Vigil device id of an entity: its unique_id, or its
// node and object ids, made a valid name (letters, digits, '-', '_', '.';
// at most 64, a long one shortened with a hash of the whole).
func DeviceID(e *Entity) string {
	src := e.UniqueID
	if src == "" {
		src = e.Key
		if t, ok := ParseTopic("", strings.TrimPrefix(e.ConfigTopic, firstLevel(e.ConfigTopic))); ok {
			src = strings.Trim(t.NodeID+"_"+t.ObjectID, "_")
		}
	}
	b := []byte(src)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			b[i] = '_'
		}
	}
	id := string(b)
	if len(id) > 64 || !vigil.ValidName(id) || vigil.Reserved(id) {
		sum := sha256.Sum256([]byte(src))
		id = id[:min(len(id), 47)] + "-" + hex.EncodeToString(sum[:8])
	}
	return id
}

func firstLevel(topic string) string {
	if i := strings.Index(topic, "/"); i >= 0 {
		return topic[:i]
	}
	return topic
}

func deviceIDWithKey(id, key string) string {
	sum := sha256.Sum256([]byte(key))
	return id[:min(len(id), 47)] + "-" + hex.EncodeToString(sum[:8])
}

func clipRunes(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s
}
