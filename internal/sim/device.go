package sim

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/ingest"
	"github.com/vigilhq/vigil/internal/mqttconn"
)

// device is one simulated sensor and its MQTT connection.
type device struct {
	id       string // MAC-derived: client id and device id
	sensorID string // legacy mode: the paper's sensor_id
	fleet    *Fleet
	sim      *Sim
	rng      *rand.Rand
	startAt  time.Duration // offset of its first connection (connect-rate ramp)

	mu            sync.Mutex // guards the fault state below and gen
	gen           *valueGen
	dropUntil     time.Time
	netDownTill   time.Time
	intruderUntil time.Time
	intruderDist  float64
	ever          bool // has connected once

	cm     *autopaho.ConnectionManager
	camera *simCamera // type camera only
}

// publishQoS1 publishes on the device's connection.
func (d *device) publishQoS1(topic string, payload []byte) error {
	cm := d.connection()
	if cm == nil {
		return errors.New("not connected yet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := cm.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, QoS: 1})
	return err
}

// intruderAt reports whether an intruder is near the device at t.
func (d *device) intruderAt(t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return t.Before(d.intruderUntil)
}

func (d *device) topic() string {
	switch {
	case d.sim.sc.Legacy:
		return legacyTopic(d.fleet.Type)
	case d.camera != nil:
		return ingest.DeviceTopic(d.fleet.Site, d.id, "motion")
	}
	return telemetryTopic(d.fleet.Site, d.id)
}

// backoff delays reconnection: until a simulated network outage ends, else
// exponentially from 250 ms to 30 s with jitter, so that a storm of
// disconnected devices does not come back in lockstep. It runs on
// autopaho's goroutine, so its jitter comes from the global (locked)
// source, not d.rng.
func (d *device) backoff(attempt int) time.Duration {
	d.mu.Lock()
	down := time.Until(d.netDownTill)
	d.mu.Unlock()
	if down > 0 {
		return down + time.Duration(rand.Int64N(int64(time.Second)))
	}
	if attempt == 0 {
		return 0
	}
	base := min(250*time.Millisecond<<min(attempt, 8), 30*time.Second)
	return base/2 + time.Duration(rand.Int64N(int64(base/2)+1))
}

// client is the device's MQTT client: its connection counted in the
// stats, "online" on its retained status topic and "offline" as its will
// (native mode), and for a camera its meta and its commands.
func (d *device) client() mqttconn.Client {
	sc := d.sim.sc
	st := d.sim.stats
	c := mqttconn.Client{
		Brokers:   sc.Brokers,
		TLSConfig: d.sim.tls,
		Username:  sc.Username,
		Password:  sc.Password,
		ClientID:  d.id,
		KeepAlive: uint16(sc.KeepAlive / time.Second),
		Backoff:   d.backoff,
		OnConnectionUp: func() {
			st.Connected.Add(1)
			d.mu.Lock()
			first := !d.ever
			d.ever = true
			d.mu.Unlock()
			if first {
				if st.EverConnected.Add(1) == st.Devices {
					st.allConnected.Store(time.Now().UnixNano())
				}
			} else {
				st.Reconnects.Add(1)
			}
		},
		OnConnectionDown: func() { st.Connected.Add(-1) },
		OnConnectError: func(err error) {
			st.ConnectErrors.Add(1)
			d.sim.connectError(d.id, err)
		},
		// What a device says on each connection is neither checked nor
		// waited for: its readings do not wait on it.
		OnUp: func(_ context.Context, cm *autopaho.ConnectionManager) error {
			if !sc.Legacy {
				go d.publishStatus(cm, "online")
			}
			if d.camera != nil {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					cm.Publish(ctx, &paho.Publish{Topic: ingest.DeviceTopic(d.fleet.Site, d.id, "meta"), Payload: d.camera.meta(), QoS: 1, Retain: true})
					cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: ingest.CameraTopic(d.fleet.Site, d.id, ingest.CameraCmd), QoS: 1}}})
				}()
			}
			return nil
		},
	}
	if !sc.Legacy {
		c.Will = &paho.WillMessage{Topic: statusTopic(d.fleet.Site, d.id), Payload: []byte("offline"), QoS: 1, Retain: true}
	}
	if d.camera != nil {
		c.OnMessage = func(p *paho.Publish) { d.camera.cam.Command(p.Payload) }
	}
	return c
}

func (d *device) publishStatus(cm *autopaho.ConnectionManager, status string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := cm.Publish(ctx, &paho.Publish{Topic: statusTopic(d.fleet.Site, d.id), Payload: []byte(status), QoS: 1, Retain: true})
	return err
}

// run connects and publishes every period until ctx ends, then says
// "offline" and disconnects cleanly.
func (d *device) run(ctx context.Context) {
	select {
	case <-time.After(d.startAt):
	case <-ctx.Done():
		return
	}
	// The connection outlives ctx so that the device can say "offline"
	// and disconnect cleanly when the simulation ends.
	connCtx, connCancel := context.WithCancel(context.Background())
	defer connCancel()
	cm, err := mqttconn.Connect(ctx, connCtx, d.client())
	if cm == nil {
		d.sim.stats.ConnectErrors.Add(1)
		d.sim.connectError(d.id, err)
		return
	}
	d.mu.Lock()
	d.cm = cm
	d.mu.Unlock()
	defer d.stop(cm)
	if d.camera != nil {
		camCtx, stopCam := context.WithCancel(ctx)
		camDone := make(chan struct{})
		go func() { defer close(camDone); d.camera.capture(camCtx) }()
		defer func() { stopCam(); <-camDone }()
	}

	// A broker that refused the device (counted, and logged once, by
	// OnConnectError) may let it in later: it keeps trying until ctx ends.
	if err != nil && cm.AwaitConnection(ctx) != nil {
		return // ended before the first connection
	}
	period := d.fleet.Period
	// Spread the fleet's readings over the period.
	select {
	case <-time.After(time.Duration(d.rng.Int64N(int64(period)))):
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	var seq int64
	buf := make([]byte, 0, 256)
	for {
		now := time.Now()
		if value, ok := d.reading(now); ok {
			seq++
			var payload []byte
			if d.sim.sc.Legacy {
				payload = LegacyPayload(d.sensorID, d.fleet.Type, now, value, d.fleet.Units)
			} else if d.camera != nil {
				buf = motionPayload(buf[:0], now, value, seq)
				payload = buf
			} else {
				buf = nativePayload(buf[:0], d.id, d.fleet.Type, now, value, d.fleet.Units, seq)
				payload = buf
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := cm.Publish(pctx, &paho.Publish{Topic: d.topic(), Payload: payload, QoS: byte(d.sim.sc.QoS), Retain: d.fleet.Retain})
			cancel()
			switch {
			case err == nil:
				d.sim.stats.Published.Add(1)
				d.sim.stats.Ack.Record(time.Since(now))
			case ctx.Err() == nil:
				d.sim.stats.Errors.Add(1)
				d.sim.log.Debug("publish failed", "device", d.id, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reading draws the next value and the random faults; ok is false when an
// injected fault keeps the device silent.
func (d *device) reading(now time.Time) (float64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.fleet.Faults
	switch {
	case f.Disconnect > 0 && d.rng.Float64() < f.Disconnect:
		d.netDownTill = now.Add(f.DisconnectOffline)
		go d.cm.TerminateConnectionForTest() // abrupt: no DISCONNECT, so the last will fires
	case f.Dropout > 0 && d.rng.Float64() < f.Dropout:
		d.dropUntil = now.Add(f.DropoutDuration)
	case f.Stuck > 0 && d.rng.Float64() < f.Stuck:
		d.gen.stick(now, f.StuckDuration, d.gen.next(now))
	case f.Spike > 0 && d.rng.Float64() < f.Spike:
		d.gen.spikeUntil = now.Add(time.Nanosecond) // this reading only
	}
	if now.Before(d.dropUntil) || now.Before(d.netDownTill) {
		d.sim.stats.Suppressed.Add(1)
		return 0, false
	}
	v := d.gen.next(now)
	if now.Before(d.intruderUntil) && (d.fleet.Type == TypeDistance || d.fleet.Type == TypeCamera) {
		v = round(max(0.05, d.intruderDist+(d.rng.Float64()-0.5)*0.2), 2)
	}
	return v, true
}

// connection returns the device's connection manager once it has one.
func (d *device) connection() *autopaho.ConnectionManager {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cm
}

// apply runs a timeline action on this device.
func (d *device) apply(action string, now time.Time, dur time.Duration, distance float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch action {
	case "disconnect":
		d.netDownTill = now.Add(dur)
		if d.cm != nil {
			go d.cm.TerminateConnectionForTest()
		}
	case "dropout":
		d.dropUntil = now.Add(dur)
	case "stuck":
		d.gen.stick(now, dur, d.gen.next(now))
	case "spike":
		d.gen.spikeUntil = now.Add(dur)
	case "intrusion":
		d.intruderUntil, d.intruderDist = now.Add(dur), distance
	}
}

func (d *device) stop(cm *autopaho.ConnectionManager) {
	if !d.sim.sc.Legacy {
		// Say goodbye on the retained status topic: a clean disconnect
		// sends no last will.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if cm.AwaitConnection(ctx) == nil {
			d.publishStatus(cm, "offline")
		}
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := cm.Disconnect(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		d.sim.log.Debug("disconnect", "device", d.id, "error", err)
	}
	<-cm.Done()
}

// legacySensorID is the paper's sensor_id for the i-th device (from 0).
func legacySensorID(i int) string { return strconv.Itoa(i + 1) }
