package broker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigilhq/vigil/internal/audit"
)

// recorder is a TCP proxy in front of a broker that keeps what each
// client sent, for seeds of FuzzLiveBroker.
type recorder struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	scenario string
	wg       sync.WaitGroup
	got      []recording
}

type recording struct {
	scenario string
	sent     []byte
}

func newRecorder(t *testing.T, target string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, target: target}
	go r.serve()
	t.Cleanup(func() { ln.Close() })
	return r
}

func (r *recorder) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		scenario := r.scenario
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			defer c.Close()
			b, err := net.Dial("tcp", r.target)
			if err != nil {
				return
			}
			defer b.Close()
			var sent bytes.Buffer
			done := make(chan struct{})
			go func() {
				io.Copy(c, b)
				c.Close()
				close(done)
			}()
			io.Copy(io.MultiWriter(b, &sent), c)
			b.Close()
			<-done
			r.mu.Lock()
			r.got = append(r.got, recording{scenario: scenario, sent: sent.Bytes()})
			r.mu.Unlock()
		}()
	}
}

// run records the connections fn makes as scenario.
func (r *recorder) run(t *testing.T, scenario string, fn func(addr string) error) {
	r.mu.Lock()
	r.scenario = scenario
	r.mu.Unlock()
	if err := fn(r.ln.Addr().String()); err != nil {
		t.Errorf("%s: %v", scenario, err)
	}
	r.wg.Wait()
}

// TestRecordLiveFuzzSeeds records the seeds of FuzzLiveBroker from real
// clients talking to a live broker through a recording proxy, and writes
// them to testdata/fuzz/FuzzLiveBroker (the recorded files start with
// "rec-"; others there are inputs the fuzzer found). It needs Debian's
// mosquitto-clients and python3-paho-mqtt, and runs only when asked:
//
//	VIGIL_RECORD_FUZZ_SEEDS=1 go test -run TestRecordLiveFuzzSeeds ./internal/broker
func TestRecordLiveFuzzSeeds(t *testing.T) {
	if os.Getenv("VIGIL_RECORD_FUZZ_SEEDS") == "" {
		t.Skip("set VIGIL_RECORD_FUZZ_SEEDS=1 to record the fuzz seeds again")
	}
	fb := startFuzzBroker(t)
	r := newRecorder(t, fb.addr)
	cmd := func(name string, args ...string) func(string) error {
		return func(addr string) error {
			host, port, _ := net.SplitHostPort(addr)
			args := append([]string{"-h", host, "-p", port}, args...)
			out, err := exec.Command(name, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
			}
			return nil
		}
	}
	dev := []string{"-u", fuzzDevice, "-P", fuzzDevicePassword}
	devTopic := "vigil/site1/" + fuzzDevice + "/telemetry"
	reading := `{"temperature": 21.5, "seq": 1}`
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for q := range 3 {
			r.run(t, fmt.Sprintf("mosquitto_pub-%s-qos%d", v, q), cmd("mosquitto_pub", append(dev, "-V", v, "-q", strconv.Itoa(q), "-t", devTopic, "-m", reading)...))
		}
		r.run(t, "mosquitto_pub-"+v+"-retain-will", cmd("mosquitto_pub", append(dev, "-V", v, "-q", "1", "-r", "-t", "vigil/site1/"+fuzzDevice+"/meta", "-m", `{"name":"hall"}`,
			"--will-topic", "vigil/site1/"+fuzzDevice+"/status", "--will-payload", "offline", "--will-qos", "1", "--will-retain")...))
		r.run(t, "mosquitto_pub-"+v+"-anonymous-legacy", cmd("mosquitto_pub", "-V", v, "-q", "1", "-i", "TempPub", "-t", "sensors/temperature",
			"-m", `{"sensor_id": "1", "type": "temperature", "timestamp": "04-12-2026 10:00:00", "value": 23.45, "units": "Celsius"}`))
		r.run(t, "mosquitto_sub-"+v, cmd("mosquitto_sub", append(dev, "-V", v, "-q", "2", "-t", "vigil/+/"+fuzzDevice+"/#", "-t", "vigil/site1/"+fuzzDevice+"/cmd", "-E")...))
		r.run(t, "mosquitto_sub-"+v+"-anonymous-unsubscribe", cmd("mosquitto_sub", "-V", v, "-q", "1", "-t", "#", "-t", "$SYS/broker/version", "-U", "#", "-W", "1", "-C", "1"))
	}
	r.run(t, "mosquitto_pub-mqttv5-properties", cmd("mosquitto_pub", append(dev, "-V", "mqttv5", "-q", "2", "-t", devTopic, "-m", reading,
		"-D", "connect", "session-expiry-interval", "60", "-D", "connect", "receive-maximum", "10", "-D", "connect", "user-property", "k", "v",
		"-D", "publish", "message-expiry-interval", "30", "-D", "publish", "content-type", "application/json",
		"-D", "publish", "response-topic", "vigil/site1/"+fuzzDevice+"/reply", "-D", "publish", "correlation-data", "abc",
		"-D", "publish", "user-property", "a", "b", "-D", "publish", "payload-format-indicator", "1")...))
	r.run(t, "mosquitto_sub-mqttv5-properties", cmd("mosquitto_sub", append(dev, "-V", "mqttv5", "-t", "vigil/site1/"+fuzzDevice+"/#", "-q", "1", "-E",
		"-D", "subscribe", "subscription-identifier", "7", "-D", "connect", "topic-alias-maximum", "5", "-D", "connect", "maximum-packet-size", "65536",
		"--nodelay", "--retain-as-published")...))

	if _, err := exec.LookPath("/usr/bin/python3"); err == nil {
		for _, v := range []string{"MQTTv311", "MQTTv5"} {
			r.run(t, "python-paho-"+strings.ToLower(v), func(addr string) error {
				host, port, _ := net.SplitHostPort(addr)
				out, err := exec.Command("/usr/bin/python3", "-c", pythonClient, host, port, v, fuzzDevice, fuzzDevicePassword).CombinedOutput()
				if err != nil {
					return fmt.Errorf("python: %v: %s", err, out)
				}
				return nil
			})
		}
	}

	r.run(t, "paho-golang", func(addr string) error { return pahoGolangSession(addr) })

	for _, id := range []struct{ name, user, password string }{{"anonymous", "", ""}, {"device", fuzzDevice, fuzzDevicePassword}} {
		r.run(t, "vigil-audit-"+id.name, func(addr string) error {
			host, port, _ := net.SplitHostPort(addr)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p, _ := strconv.Atoi(port)
			_, err := audit.Run(ctx, []string{"mqtt://" + net.JoinHostPort(host, port)}, audit.Options{
				Username: id.user, Password: id.password, NoNmap: true, NoDefaultPorts: true, Ports: []int{p},
				CredentialBudget: 3, Timeout: 2 * time.Second,
			})
			return err
		})
	}

	dir := filepath.Join("testdata", "fuzz", "FuzzLiveBroker")
	old, _ := filepath.Glob(filepath.Join(dir, "rec-*"))
	for _, f := range old {
		os.Remove(f)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	seen := map[string]bool{}
	write := func(name string, mode byte, stream []byte) {
		stream = firstPackets(stream, 8<<10)
		key := string(mode) + string(stream)
		if len(stream) == 0 || seen[key] {
			return
		}
		seen[key] = true
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", mode, stream)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		n++
	}
	per := map[string]int{}
	for _, rec := range r.got {
		per[rec.scenario]++
		name := fmt.Sprintf("rec-%s-%d", rec.scenario, per[rec.scenario])
		write(name+"-raw", fuzzRaw, rec.sent)
		if mode, rest, ok := afterConnect(rec.sent); ok {
			write(name+"-after-connect", mode, rest)
		}
	}
	t.Logf("wrote %d seeds from %d recorded connections to %s", n, len(r.got), dir)
}

// firstPackets returns the whole packets at the start of stream that fit
// in limit bytes (at least the first): the limits probes send hundreds of
// kilobytes, which would only slow the fuzzer's mutations down.
func firstPackets(stream []byte, limit int) []byte {
	end := 0
	for end < len(stream) {
		remaining, n, ok := varint(stream[end+1:])
		if !ok || n < 0 {
			return stream[:max(end, min(len(stream), limit))]
		}
		next := end + 1 + n + remaining
		if next > limit && end > 0 {
			break
		}
		end = min(next, len(stream))
	}
	return stream[:end]
}

// afterConnect splits a recorded conversation after its CONNECT and picks
// the mode whose own CONNECT stands in for it: the same protocol version,
// as a device when it logged in, else anonymous.
func afterConnect(sent []byte) (byte, []byte, bool) {
	if len(sent) < 2 || sent[0] != 0x10 {
		return 0, nil, false
	}
	remaining, n, ok := varint(sent[1:])
	if !ok || n < 0 || len(sent) < 1+n+remaining {
		return 0, nil, false
	}
	body := sent[1+n : 1+n+remaining]
	if len(body) < 8 {
		return 0, nil, false
	}
	version, flags := body[6], body[7]
	login := flags&0x80 != 0
	var mode byte
	switch {
	case version == 5 && login:
		mode = fuzzDevice5
	case version == 5:
		mode = fuzzAnon5
	case login:
		mode = fuzzDevice3
	default:
		mode = fuzzAnon3
	}
	return mode, sent[1+n+remaining:], true
}

// pythonClient is a Python paho-mqtt session: argv host, port, protocol,
// username, password.
const pythonClient = `
import sys, time, paho.mqtt.client as mqtt
host, port, proto, user, pw = sys.argv[1], int(sys.argv[2]), getattr(mqtt, sys.argv[3]), sys.argv[4], sys.argv[5]
c = mqtt.Client(client_id="py-" + sys.argv[3], protocol=proto)
c.username_pw_set(user, pw)
c.will_set("vigil/site1/%s/status" % user, "offline", qos=1, retain=True)
c.connect(host, port, keepalive=30)
c.loop_start()
time.sleep(0.2)
c.subscribe([("vigil/site1/%s/cmd" % user, 1), ("vigil/+/%s/#" % user, 2)])
for q in (0, 1, 2):
    c.publish("vigil/site1/%s/telemetry" % user, '{"humidity": 40.5}', qos=q).wait_for_publish()
c.unsubscribe("vigil/site1/%s/cmd" % user)
time.sleep(0.2)
c.disconnect()
c.loop_stop()
`

// pahoGolangSession is a paho.golang (MQTT 5) session that uses the
// properties of every packet it sends.
func pahoGolangSession(addr string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	expiry, recvMax, aliasMax := uint32(60), uint16(20), uint16(5)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "paho-golang", KeepAlive: 30, CleanStart: true,
		Username: fuzzDevice, UsernameFlag: true, Password: []byte(fuzzDevicePassword), PasswordFlag: true,
		WillMessage:    &paho.WillMessage{Topic: "vigil/site1/" + fuzzDevice + "/status", Payload: []byte("offline"), QoS: 1, Retain: true},
		WillProperties: &paho.WillProperties{WillDelayInterval: ptr(uint32(0)), ContentType: "text/plain"},
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax, TopicAliasMaximum: &aliasMax,
			User: paho.UserProperties{{Key: "k", Value: "v"}}},
	}); err != nil {
		return err
	}
	id := 3
	if _, err := c.Subscribe(ctx, &paho.Subscribe{
		Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &id},
		Subscriptions: []paho.SubscribeOptions{
			{Topic: "vigil/site1/" + fuzzDevice + "/#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 1},
			{Topic: "vigil/+/" + fuzzDevice + "/cmd", QoS: 1},
		}}); err != nil {
		return err
	}
	for q := range 3 {
		alias := uint16(1)
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/site1/" + fuzzDevice + "/telemetry", QoS: byte(q), Payload: []byte(`{"pressure": 1013}`),
			Properties: &paho.PublishProperties{TopicAlias: &alias, ContentType: "application/json", ResponseTopic: "vigil/site1/" + fuzzDevice + "/reply",
				CorrelationData: []byte{1, 2}, MessageExpiry: ptr(uint32(30)), PayloadFormat: ptr(byte(1)), User: paho.UserProperties{{Key: "a", Value: "b"}}}}); err != nil {
			return err
		}
	}
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"vigil/+/" + fuzzDevice + "/cmd"}}); err != nil {
		return err
	}
	return c.Disconnect(&paho.Disconnect{ReasonCode: 0x04, Properties: &paho.DisconnectProperties{ReasonString: "bye"}})
}

func ptr[T any](v T) *T { return &v }
