package coord

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/conf"
	"github.com/vigilhq/vigil/internal/ingest"
)

// rtspCams configures n RTSP cameras cam1..camN of site home, each in a
// zone of its own, the first with a password.
func rtspCams(n, preRoll int) func(*Config) {
	return func(c *Config) {
		c.Recording.PreRollSeconds = preRoll
		c.Cameras = map[string]conf.Camera{}
		for i := 1; i <= n; i++ {
			r := &conf.RTSPCamera{URL: fmt.Sprintf("rtsp://10.0.0.%d/main", i)}
			if i == 1 {
				r.Username, r.Password = "admin", "cam1-password"
			}
			c.Cameras[fmt.Sprintf("cam%d", i)] = conf.Camera{Site: "home", Zone: fmt.Sprintf("z%d", i), RTSP: r}
		}
	}
}

// commands returns the expect commands published to agent n, in order.
func (r *rig) commands(n int) []ingest.AgentCommand {
	var out []ingest.AgentCommand
	prefix := ingest.AgentTopic(r.id(n), ingest.AgentCmd) + " "
	r.broker.mu.Lock()
	defer r.broker.mu.Unlock()
	for _, p := range r.broker.pubs {
		if rest, ok := strings.CutPrefix(p, prefix); ok {
			var c ingest.AgentCommand
			if json.Unmarshal([]byte(rest), &c) == nil && c.Action == ingest.ActionExpect {
				out = append(out, c)
			}
		}
	}
	return out
}

// ringsUp has agent n say it is ready for every ring it was given.
func (r *rig) ringsUp(n int) {
	r.do(func() {
		for _, st := range r.c.rings {
			if st.agent != nil && st.agent.seq == n && st.state == streamExpecting {
				r.c.onSegment(st.agent.id, ingest.SegmentReport{StreamID: st.id, State: ingest.SegmentExpecting})
			}
		}
	})
}

// RTSP cameras get a ring each on an agent; a recording goes to the agent
// holding its camera's ring, with pre-roll; capacity is counted per kind,
// so that when the ring's agent has no room left the recording goes to a
// new agent, without pre-roll; the camera's password reaches each agent
// sealed for it alone; and a ring whose agent dies moves to another.
func TestRTSPCamerasRingsAndCapacityPerKind(t *testing.T) {
	r := newRigWith(t, conf.Agents{Min: 1, Max: 3, Capacity: 3, RTSPCapacity: 4, RingCapacity: 8},
		&memRuntime{exits: map[string]func(error){}, started: make(chan string, 100)}, rtspCams(3, 5))
	r.ready(1)
	r.ringsUp(1)
	r.want("agents with 3 rings", r.agents(), []string{"1:ready:3"})
	rings := r.commands(1)
	if len(rings) != 3 || rings[0].Kind != ingest.KindRing || rings[0].PreRoll != 5 || rings[0].Duration != 0 || rings[0].Dir != "" {
		t.Fatalf("ring commands %+v", rings)
	}

	// Rings take 3/8 of agent 1: two recordings fit beside them (2/4),
	// a third would not (3/8 + 3/4 > 1).
	r.detect("home", "cam1")
	r.detect("home", "cam2")
	r.want("cam1 and cam2 on agent", []int{r.on("home", "cam1"), r.on("home", "cam2")}, []int{1, 1})
	r.detect("home", "cam3")
	r.want("cam3 queued", r.on("home", "cam3"), 0)
	r.want("agents", r.agents(), []string{"1:ready:5", "2:starting:0"})
	r.ready(2)
	r.want("cam3 on agent", r.on("home", "cam3"), 2)

	var rec1 ingest.AgentCommand
	for _, c := range r.commands(1) {
		if c.Kind == ingest.KindRTSP && c.Camera == "cam1" {
			rec1 = c
		}
	}
	if rec1.PreRoll != 5 || rec1.Duration != 30 || rec1.Dir == "" || rec1.RTSP == nil || rec1.RTSP.URL != "rtsp://10.0.0.1/main" || rec1.RTSP.Transport != "tcp" {
		t.Fatalf("cam1's recording command %+v", rec1)
	}
	var secret1, secret2 string
	r.do(func() { secret1, secret2 = r.c.agents[r.id(1)].secret, r.c.agents[r.id(2)].secret })
	if pw, err := ingest.Unseal(secret1, rec1.RTSP.Sealed); err != nil || pw != "cam1-password" {
		t.Errorf("agent 1 unseals %q, %v", pw, err)
	}
	if _, err := ingest.Unseal(secret2, rec1.RTSP.Sealed); err == nil {
		t.Error("agent 2 unseals agent 1's camera password")
	}
	cmds2 := r.commands(2)
	if len(cmds2) != 1 || cmds2[0].Camera != "cam3" || cmds2[0].PreRoll != 0 {
		t.Errorf("agent 2's commands %+v: cam3's recording without pre-roll (its ring is on agent 1)", cmds2)
	}

	// Agent 1 dies: its recordings and its rings move to agent 2, as far as
	// agent 2 has room; recordings go first.
	r.rt.exit(t, r.id(1))
	r.do(func() {})
	var onTwo []string
	r.do(func() {
		for _, st := range r.c.agents[r.id(2)].streams {
			onTwo = append(onTwo, st.kindOf())
		}
	})
	rtsp, ring := 0, 0
	for _, k := range onTwo {
		switch k {
		case ingest.KindRTSP:
			rtsp++
		case ingest.KindRing:
			ring++
		}
	}
	if rtsp != 3 {
		t.Errorf("agent 2 has %d recordings, want all 3 (%v)", rtsp, onTwo)
	}
	if ring != 2 { // 3/4 + 2/8 = 1
		t.Errorf("agent 2 has %d rings beside 3 recordings, want 2 (%v)", ring, onTwo)
	}
}

// The capacity of each kind is a share of an agent.
func TestCapacitySharesPerKind(t *testing.T) {
	c := ingest.Capacity{JPEG: 3, RTSP: 16, Ring: 32}
	for _, tc := range []struct {
		kinds []string
		add   string
		fits  bool
	}{
		{[]string{"jpeg", "jpeg"}, "jpeg", true},
		{[]string{"jpeg", "jpeg", "jpeg"}, "ring", false},
		{nil, "rtsp", true},
		{[]string{"jpeg", "jpeg"}, "rtsp", true},                    // 2/3 + 1/16
		{append(repeat("rtsp", 15), "ring", "ring"), "ring", false}, // 15/16 + 3/32 > 1
		{repeat("rtsp", 15), "ring", true},                          // 15/16 + 1/32
	} {
		if got := c.Fits(tc.add, tc.kinds...); got != tc.fits {
			t.Errorf("%v + %s fits: %v, want %v", tc.kinds, tc.add, got, tc.fits)
		}
	}
	if (ingest.Capacity{JPEG: 3}).Fits(ingest.KindRTSP) {
		t.Error("an agent that takes no RTSP stream takes one")
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
