package audit

// The text report, for a terminal.

import (
	"bytes"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// textWidth is the width text reports are wrapped to.
const textWidth = 80

var severityColors = map[Severity]string{Critical: "1;31", High: "31", Medium: "33", Low: "36", Info: "1"}

var gradeColors = map[string]string{"A": "1;32", "B": "1;32", "C": "1;33", "D": "1;31", "F": "1;31"}

func writeText(b *bytes.Buffer, reports []*Report, color bool) {
	paint := func(s, code string) string {
		if !color || code == "" {
			return s
		}
		return "\x1b[" + code + "m" + s + "\x1b[0m"
	}
	for i, r := range reports {
		if i > 0 {
			b.WriteString("\n\n")
		}
		g := grade(r)
		head := clean(r.Target) + " — grade " + g
		if r.Broker != "" {
			head += " — " + clean(r.Broker)
		}
		var hb bytes.Buffer
		wrap(&hb, head, "", "  ")
		h := hb.String()
		if color {
			h = strings.Replace(h, "grade "+g, "grade "+paint(g, gradeColors[g]), 1)
		}
		b.WriteString(h)
		fmt.Fprintf(b, "Findings: %s\n", severityCounts(r.Findings))

		fs := bySeverity(r.Findings)
		for j, f := range fs {
			if j == 0 || f.Severity != fs[j-1].Severity {
				b.WriteString("\n")
				b.WriteString(paint(strings.ToUpper(f.Severity.String()), severityColors[f.Severity]) + "\n")
			}
			var fb bytes.Buffer
			id := clean(f.ID)
			wrap(&fb, id+": "+clean(f.Title), "  ", "    ")
			for _, line := range strings.Split(strings.TrimRight(clean(f.Evidence), "\n"), "\n") {
				if line == "" && f.Evidence == "" {
					break
				}
				lead := line[:len(line)-len(strings.TrimLeft(line, " "))]
				wrap(&fb, line, "      ", "      "+lead+"  ")
			}
			if f.Remediation != "" {
				wrap(&fb, "Fix: "+clean(f.Remediation), "    ", "         ")
			}
			s := fb.String()
			if color {
				s = strings.Replace(s, "  "+id+":", "  "+paint(id, "1")+":", 1)
				s = strings.Replace(s, "    Fix:", "    "+paint("Fix:", "1"), 1)
			}
			b.WriteString(s)
		}

		b.WriteString("\n")
		if len(r.Checks) == 0 {
			b.WriteString("Checks: none ran\n")
		} else {
			fmt.Fprintf(b, "Checks: %s\n", checkCounts(r.Checks))
		}
		for _, c := range r.Checks {
			if c.Status != StatusSkipped && c.Status != StatusError {
				continue
			}
			what := "skipped"
			if c.Status == StatusError {
				what = paint("failed", "31")
			}
			note := clean(c.Note)
			if note == "" {
				note = "no reason given"
			}
			wrap(b, what+" "+clean(c.ID)+": "+note, "  ", "    ")
		}
		nmap := clean(r.Nmap)
		if nmap == "" {
			nmap = "not run"
		}
		wrap(b, "nmap: "+nmap, "", "  ")
		took := "Took " + duration(r.DurationMS)
		if s := started(r.Started); s != "" {
			took += ", started " + s
		}
		b.WriteString(took + "\n")
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

// clean makes text that a broker sent safe to print on a terminal (and
// honest in a web page):
// control characters (but newlines), invalid UTF-8 and bidirectional
// overrides become visible escapes, tabs four spaces, so that no report
// can move the cursor, change colours or reorder what is shown.
func clean(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteByte('\n')
		case r == '\t':
			b.WriteString("    ")
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// wrap writes s, broken at spaces into lines of at most textWidth
// columns: its first line starts with first, every other one with rest.
// Line breaks in s are kept; a word longer than a line is never cut.
func wrap(b *bytes.Buffer, s, first, rest string) {
	prefix := first
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimRight(line, " ")
		for {
			avail := max(textWidth-utf8.RuneCountInString(prefix), 20)
			if utf8.RuneCountInString(line) <= avail {
				break
			}
			cut := breakAt(line, avail)
			if cut < 0 {
				break
			}
			b.WriteString(prefix + strings.TrimRight(line[:cut], " ") + "\n")
			line = strings.TrimLeft(line[cut:], " ")
			prefix = rest
		}
		b.WriteString(strings.TrimRight(prefix+line, " ") + "\n")
		prefix = rest
	}
}

// breakAt returns where to break s so that its first line has at most n
// runes: the last space that allows it after the first word, else the
// first space after an overlong first word, else -1.
func breakAt(s string, n int) int {
	last, word, col := -1, false, 0
	for i, r := range s {
		switch {
		case r == ' ' && word && col <= n:
			last = i
		case r == ' ' && word && last < 0:
			return i
		case r != ' ':
			word = true
			if col >= n && last >= 0 {
				return last
			}
		}
		col++
	}
	return -1
}
