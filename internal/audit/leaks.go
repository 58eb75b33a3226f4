package audit

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// sensitive are the kinds of data retained messages must not hold, most
// severe first.
var sensitive = []struct {
	kind string
	sev  Severity
	re   *regexp.Regexp
	ok   func(string) bool // a further test of a match (nil: none)
}{
	{"password or secret", High, regexp.MustCompile(`(?i)"?(?:pass(?:word|wd)?|secret|api[_-]?key|token|auth(?:orization)?)"?\s*[:=]\s*"?([^"\s,;}]{3,})`), nil},
	{"JSON web token", High, regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`), nil},
	{"card number", High, regexp.MustCompile(`\b(?:\d[ -]?){12,18}\d\b`), luhn},
	{"e-mail address", Medium, regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`), nil},
	{"GPS position", Medium, regexp.MustCompile(`(?i)"?lat(?:itude)?"?\s*[:=]\s*-?\d{1,2}\.\d{3,}`), nil},
	{"MAC address", Low, regexp.MustCompile(`\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b`), nil},
	{"IP address", Low, regexp.MustCompile(`\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b`), nil},
}

// luhn tells whether a run of digits (spaces and dashes allowed) passes
// the card number checksum.
func luhn(s string) bool {
	var digits []int
	for _, r := range s {
		if unicode.IsDigit(r) {
			digits = append(digits, int(r-'0'))
		}
	}
	if len(digits) < 13 || len(digits) > 19 {
		return false
	}
	sum := 0
	for i := range digits {
		d := digits[len(digits)-1-i]
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// mask shows a match's shape without its content: its first two
// characters and its length.
func mask(s string) string {
	r := []rune(s)
	if len(r) <= 4 {
		return strings.Repeat("*", len(r))
	}
	return string(r[:2]) + strings.Repeat("*", min(len(r)-2, 12)) + " (" + strconv.Itoa(len(r)) + " chars)"
}

// scanRetained finds sensitive data in retained payloads; each topic is
// reported once per kind, its match masked.
func scanRetained(retained map[string][]byte) []leak {
	topics := make([]string, 0, len(retained))
	for t := range retained {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	var out []leak
	for _, t := range topics {
		p := string(retained[t])
		if len(p) > 64<<10 {
			p = p[:64<<10]
		}
		for _, s := range sensitive {
			for _, m := range s.re.FindAllStringSubmatch(p, 4) {
				v := m[0]
				if len(m) > 1 && m[1] != "" {
					v = m[1] // the secret, not its key
				}
				if s.ok != nil && !s.ok(v) {
					continue
				}
				out = append(out, leak{topic: t, kind: s.kind, redacted: mask(v), sev: s.sev})
				break
			}
		}
	}
	return out
}
