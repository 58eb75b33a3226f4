package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
)

// MAC is a 48-bit hardware address.
type MAC [6]byte

// String returns the MAC as 12 lowercase hex digits, the form used for
// client and device ids ("02a1b2c3d4e5").
func (m MAC) String() string { return fmt.Sprintf("%x", m[:]) }

// macSource hands out unique MACs.
type macSource struct {
	next func(i int) MAC
	seen map[MAC]bool
	i    int
}

// newSeededMACs returns locally administered unicast MACs (first octet
// x2, x6, xA or xE) drawn from seed: the same seed gives the same fleet.
func newSeededMACs(seed uint64) *macSource {
	rng := rand.New(rand.NewPCG(seed, 0x6d6163)) // "mac"
	return &macSource{seen: map[MAC]bool{}, next: func(int) MAC {
		var m MAC
		v := rng.Uint64()
		for j := range 6 {
			m[j] = byte(v >> (8 * j))
		}
		m[0] = m[0]&0xfc | 0x02 // locally administered, unicast
		return m
	}}
}

// newHostMACs returns the host NIC's MAC plus the device index, as the
// paper derives client ids from the MAC address.
func newHostMACs() (*macSource, error) {
	base, err := hostMAC()
	if err != nil {
		return nil, err
	}
	var b [8]byte
	copy(b[2:], base[:])
	start := binary.BigEndian.Uint64(b[:])
	return &macSource{seen: map[MAC]bool{}, next: func(i int) MAC {
		binary.BigEndian.PutUint64(b[:], (start+uint64(i))&0xffffffffffff)
		var m MAC
		copy(m[:], b[2:])
		return m
	}}, nil
}

func (s *macSource) take() MAC {
	for {
		m := s.next(s.i)
		s.i++
		if !s.seen[m] {
			s.seen[m] = true
			return m
		}
	}
}

// hostMAC returns the hardware address of the first interface that is up,
// not loopback and has one.
func hostMAC() (MAC, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return MAC{}, fmt.Errorf("list network interfaces: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 || len(ifc.HardwareAddr) != 6 {
			continue
		}
		var m MAC
		copy(m[:], ifc.HardwareAddr)
		if m != (MAC{}) {
			return m, nil
		}
	}
	return MAC{}, errors.New("no network interface with a MAC address (use --seed instead of --mac-from-host)")
}
