package audit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

// The resource-limit probes: the largest message the broker takes, and
// whether it holds connections that never send a CONNECT. Both are
// bounded (about 17 MiB sent, 51 connections for 2 s).

// payloadSizes are the payloads max-payload publishes, in order, until
// one is refused: 17.25 MiB at most.
var payloadSizes = []int{256 << 10, 1<<20 + 1, 16<<20 + 1}

// sizeName writes a size as the probes choose them: "256 KiB", "1 MiB + 1 B".
func sizeName(n int) string {
	for _, u := range []struct {
		name string
		size int
	}{{"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			s := fmt.Sprintf("%d %s", n/u.size, u.name)
			if r := n % u.size; r > 0 {
				s += fmt.Sprintf(" + %d B", r)
			}
			return s
		}
	}
	return fmt.Sprintf("%d B", n)
}

func checkMaxPayload(ctx context.Context, env *Env) ([]Finding, error) {
	p, err := env.newProber(ctx, "payload")
	if err != nil {
		return nil, err
	}
	defer p.close()
	pub, why, err := p.writable(ctx)
	if err != nil {
		return nil, err
	}
	if pub == "" {
		return nil, Skip("%s may not publish under the audit's topics (%s)", p.id, why)
	}
	topic := pub + "/max-payload"
	var lines []string
	if p.c != nil {
		if m := p.c.Connack.Properties.MaximumPacketSize; m > 0 {
			lines = append(lines, fmt.Sprintf("The CONNACK advertises a maximum packet size of %d bytes.", m))
		}
	}
	largest := 0
	for _, n := range payloadSizes {
		o, err := p.publish(ctx, topic, 1, bytes.Repeat([]byte{'v'}, n))
		if err != nil {
			return nil, err
		}
		lines = append(lines, fmt.Sprintf("PUBLISH QoS 1 of %s to %q: %s", sizeName(n), topic, o))
		if o.Ack == 0 || o.Code >= 0x80 {
			break
		}
		largest = n
	}
	evidence := fmt.Sprintf("As %s on %s:\n%s", p.id, p.ep.URL(), strings.Join(lines, "\n"))
	if largest == payloadSizes[len(payloadSizes)-1] {
		return []Finding{{Severity: Low, Title: "No message size limit: the broker took a message of " + sizeName(largest),
			Evidence: evidence + "\nOne client can make the broker hold and forward large messages to every subscriber.",
			Remediation: "Limit the packet size to what your devices send: Mosquitto max_packet_size (or message_size_limit), " +
				"EMQX mqtt.max_packet_size (1MB by default), Vigil mqtt.max_packet_size (1 MiB by default)."}}, nil
	}
	title := "Messages up to " + sizeName(largest) + " are accepted"
	if largest == 0 {
		title = "Even a message of " + sizeName(payloadSizes[0]) + " is refused"
	}
	return []Finding{{Severity: Info, Title: title, Evidence: evidence}}, nil
}

// slowConns is how many silent connections slow-connect opens, and
// slowWindow how long it watches them.
const (
	slowConns  = 50
	slowWindow = 2 * time.Second
)

func checkSlowConnect(ctx context.Context, env *Env) ([]Finding, error) {
	eps := env.MQTT()
	if len(eps) == 0 {
		return nil, Skip("no endpoint speaks MQTT")
	}
	var ep Endpoint
	for _, e := range eps {
		if !e.WS() && (ep.Scheme == "" || ep.TLS() && !e.TLS()) {
			ep = e // plain MQTT first, else MQTT over TLS
		}
	}
	if ep.Scheme == "" {
		return nil, Skip("no MQTT endpoint over TCP (WebSocket only)")
	}
	dialTimeout := min(env.Opts.Timeout, time.Second)

	// Open the connections at once: slowConns that send nothing (not even
	// a TLS handshake), and one that sends the first half of a CONNECT.
	conns := make([]net.Conn, slowConns+1)
	opened := make([]time.Time, slowConns+1)
	errs := make([]error, slowConns+1)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			if i == slowConns {
				conns[i], errs[i] = halfConnect(ctx, env, ep)
			} else {
				d := net.Dialer{Timeout: dialTimeout}
				conns[i], errs[i] = d.DialContext(ctx, "tcp", ep.Addr())
			}
			opened[i] = time.Now()
		})
	}
	wg.Wait()

	// Watch them: a read ends when the broker closes the connection.
	type drop struct {
		i     int
		after time.Duration
	}
	drops := make(chan drop, len(conns))
	var readers sync.WaitGroup
	open := 0
	for i, c := range conns {
		if c == nil {
			continue
		}
		open++
		readers.Go(func() {
			buf := make([]byte, 256)
			for {
				if _, err := c.Read(buf); err != nil {
					drops <- drop{i, time.Since(opened[i])}
					return
				}
			}
		})
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		readers.Wait()
	}()
	if open == 0 {
		return nil, fmt.Errorf("no connection to %s could be opened: %v", ep.Addr(), errs[0])
	}
	dropped := map[int]time.Duration{}
	window := time.NewTimer(slowWindow)
	defer window.Stop()
watch:
	for len(dropped) < open {
		select {
		case d := <-drops:
			dropped[d.i] = d.after
		case <-window.C:
			break watch
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	var failed []string
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err.Error())
		}
	}
	held, halfHeld := open-len(dropped), false
	if _, ok := dropped[slowConns]; conns[slowConns] != nil && !ok {
		halfHeld = true
	}
	var evidence strings.Builder
	fmt.Fprintf(&evidence, "Opened %d of %d connections to %s (%d sending nothing, 1 sending half a CONNECT); after %s the broker still held %d of them",
		open, len(conns), ep.URL(), slowConns, slowWindow, held)
	if halfHeld {
		evidence.WriteString(", the half CONNECT among them")
	}
	evidence.WriteString(".")
	if len(dropped) > 0 {
		var ds []time.Duration
		for _, d := range dropped {
			ds = append(ds, d)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Fprintf(&evidence, "\nIt closed %d, the first after %s and the last after %s.",
			len(ds), ds[0].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	if len(failed) > 0 {
		fmt.Fprintf(&evidence, "\n%d could not be opened (a connection limit?): %s", len(failed), failed[0])
	}
	if held > 0 {
		return []Finding{{Severity: Low, Title: "The broker holds connections that never send a CONNECT",
			Evidence: evidence.String() + "\nA slow-loris client can use up the broker's connections or file descriptors without credentials.",
			Remediation: "Mosquitto has no CONNECT timeout setting (2.0 drops a silent connection after about 90 s, 1.5 times its default keep-alive): " +
				"cap max_connections per listener and limit connections per address in a firewall (nftables ct count, iptables connlimit). " +
				"EMQX: mqtt.idle_timeout (15s by default) closes them; also the listener's max_connections and max_conn_rate. " +
				"Vigil: mqtt.connect_timeout (10s by default) closes them, later than this check waits; lower it, and limit connections per address in a firewall."}}, nil
	}
	return []Finding{{Severity: Info, Title: "The broker drops connections that send no CONNECT", Evidence: evidence.String()}}, nil
}

// halfConnect opens a connection (with TLS on an mqtts endpoint) and
// sends the first half of an MQTT 5 CONNECT.
func halfConnect(ctx context.Context, env *Env, ep Endpoint) (net.Conn, error) {
	c, err := env.Dial(ctx, ep)
	if err != nil {
		return nil, err
	}
	pk := connectPacket(5, env.ClientID("slow"), nil)
	b, err := encodePackets(5, &pk)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetWriteDeadline(time.Now().Add(env.Opts.Timeout))
	if _, err := c.Write(b[:len(b)/2]); err != nil {
		c.Close()
		return nil, err
	}
	c.SetWriteDeadline(time.Time{})
	return c, nil
}
