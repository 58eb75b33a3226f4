package sim

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/ingest"
)

// Topic helpers for Vigil's native topic tree.
func telemetryTopic(site, device string) string { return ingest.DeviceTopic(site, device, "telemetry") }
func statusTopic(site, device string) string    { return ingest.DeviceTopic(site, device, "status") }

// legacyTopic is the paper's topic, sensors/<type>.
func legacyTopic(typ string) string { return "sensors/" + typ }

// nativePayload is the JSON a device publishes on its telemetry topic: the
// paper's fields with an RFC 3339 millisecond timestamp and a seq counter
// from which subscribers measure loss.
func nativePayload(b []byte, id, typ string, at time.Time, value float64, units string, seq int64) []byte {
	b = append(b, `{"sensor_id":`...)
	b = strconv.AppendQuote(b, id)
	b = append(b, `,"type":`...)
	b = strconv.AppendQuote(b, typ)
	b = append(b, `,"timestamp":"`...)
	b = at.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","value":`...)
	b = strconv.AppendFloat(b, value, 'f', -1, 64)
	b = append(b, `,"units":`...)
	b = strconv.AppendQuote(b, units)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, '}')
}

// LegacyPayload is byte for byte what the paper's script publishes:
// Python's json.dumps(data_payload, indent=4) of
// {"sensor_id", "type", "timestamp" ("%d-%m-%Y %H:%M:%S", local time),
// "value" (round(..., 2)), "units"}.
func LegacyPayload(sensorID, typ string, at time.Time, value float64, units string) []byte {
	return fmt.Appendf(nil, "{\n    \"sensor_id\": %s,\n    \"type\": %s,\n    \"timestamp\": %s,\n    \"value\": %s,\n    \"units\": %s\n}",
		pyString(sensorID), pyString(typ), pyString(at.Format("02-01-2006 15:04:05")), pyFloat(value), pyString(units))
}

// pyFloat formats v as Python's repr(float) does for ordinary magnitudes:
// the shortest round-tripping digits, with ".0" on whole numbers.
func pyFloat(v float64) string {
	abs := v
	if abs < 0 {
		abs = -abs
	}
	if abs != 0 && (abs >= 1e16 || abs < 1e-4) {
		s := strconv.FormatFloat(v, 'e', -1, 64) // 1e+16, like Python
		mant, exp, _ := strings.Cut(s, "e")
		if len(exp) == 2 { // Python writes at least two exponent digits: e-05
			exp = exp[:1] + "0" + exp[1:]
		}
		return mant + "e" + exp
	}
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// pyString quotes s as Python's json.dumps does by default (ensure_ascii):
// non-ASCII as \uXXXX, and no escaping of <, > or &.
func pyString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (r > 0x7f && r <= 0xffff):
			fmt.Fprintf(&b, `\u%04x`, r)
		case r > 0xffff: // a surrogate pair
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// motionPayload is what a camera's IR sensor publishes on
// vigil/<site>/<id>/motion.
func motionPayload(b []byte, at time.Time, distance float64, seq int64) []byte {
	b = append(b, `{"distance_m":`...)
	b = strconv.AppendFloat(b, distance, 'f', -1, 64)
	b = append(b, `,"timestamp":"`...)
	b = at.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, '}')
}
