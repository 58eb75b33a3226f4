package audit

import (
	"strings"
	"testing"
)

// Sensitive data in retained payloads is found, its kind named and its
// value never shown; ordinary telemetry is not reported.
func TestScanRetainedFindsAndMasksSensitiveData(t *testing.T) {
	retained := map[string][]byte{
		"home/cfg":      []byte(`{"wifi":"home","password":"hunter2-secret"}`),
		"home/jwt":      []byte(`Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U`),
		"shop/pay":      []byte(`card 4111 1111 1111 1111 ok`),
		"shop/notacard": []byte(`serial 4111 1111 1111 1112`),
		"who/owner":     []byte(`{"email":"ann@example.com"}`),
		"car/pos":       []byte(`{"lat": 48.85837, "lon": 2.29448}`),
		"dev/net":       []byte(`{"mac":"02:a1:b2:c3:d4:e5","ip":"192.168.1.20"}`),
		"sensors/temp":  []byte(`{"sensor_id":"1","temperature":23.45,"timestamp":"2026-11-21 10:00:00"}`),
	}
	hits := scanRetained(retained)
	got := map[string][]string{}
	for _, h := range hits {
		got[h.topic] = append(got[h.topic], h.kind)
		for _, secret := range []string{"hunter2-secret", "4111 1111 1111 1111", "ann@example.com", "dozjgNryP4J3"} {
			if strings.Contains(h.redacted, secret) {
				t.Errorf("%s: the evidence %q shows the secret", h.topic, h.redacted)
			}
		}
	}
	want := map[string]string{
		"home/cfg": "password or secret", "home/jwt": "JSON web token", "shop/pay": "card number",
		"who/owner": "e-mail address", "car/pos": "GPS position", "dev/net": "MAC address",
	}
	for topic, kind := range want {
		if !strings.Contains(strings.Join(got[topic], ","), kind) {
			t.Errorf("%s: found %v, want %s", topic, got[topic], kind)
		}
	}
	if !strings.Contains(strings.Join(got["dev/net"], ","), "IP address") {
		t.Errorf("dev/net: found %v, want an IP address too", got["dev/net"])
	}
	for _, clean := range []string{"sensors/temp", "shop/notacard"} {
		if len(got[clean]) > 0 {
			t.Errorf("%s: reported %v, want nothing", clean, got[clean])
		}
	}
}

func FuzzScanRetained(f *testing.F) {
	f.Add([]byte(`{"password":"x1y2z3","lat":48.1234}`))
	f.Add([]byte("4111 1111 1111 1111"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, h := range scanRetained(map[string][]byte{"t": b}) {
			if h.kind == "" || h.redacted == "" {
				t.Fatalf("empty leak %+v", h)
			}
		}
	})
}
