package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// FormatOptions adjust how Write renders reports.
type FormatOptions struct {
	Color   bool   // ANSI colours in text (the CLI sets it for terminals)
	Version string // Vigil's version, for SARIF's tool.driver.version and the HTML footer
}

// Formats are the formats Write knows.
var Formats = []string{"text", "json", "sarif", "html"}

// Write writes reports in a format: "text", "json", "sarif" or "html".
func Write(w io.Writer, format string, reports []*Report, o FormatOptions) error {
	reports = slices.DeleteFunc(slices.Clone(reports), func(r *Report) bool { return r == nil })
	var b bytes.Buffer
	var err error
	switch format {
	case "text":
		writeText(&b, reports, o.Color)
	case "json":
		err = writeJSON(&b, reports)
	case "sarif":
		err = writeSARIF(&b, reports, o.Version)
	case "html":
		err = writeHTML(&b, reports, o.Version)
	default:
		return fmt.Errorf("unknown format %q: the formats are %s", format, strings.Join(Formats, ", "))
	}
	if err != nil {
		return fmt.Errorf("%s report: %w", format, err)
	}
	_, err = w.Write(b.Bytes())
	return err
}

// grade is the report's grade, worked out if the report has none.
func grade(r *Report) string {
	if r.Grade != "" {
		return r.Grade
	}
	return Grade(min(r.Worst(), Critical))
}

// bySeverity returns the findings, most severe first, keeping the order of
// findings of one severity.
func bySeverity(fs []Finding) []Finding {
	fs = slices.Clone(fs)
	slices.SortStableFunc(fs, func(a, b Finding) int { return int(b.Severity) - int(a.Severity) })
	return fs
}

// severityCounts says how many findings of each severity there are, most
// severe first: "1 high, 2 medium"; "none" if none.
func severityCounts(fs []Finding) string {
	if len(fs) == 0 {
		return "none"
	}
	var parts []string
	fs = bySeverity(fs)
	for i := 0; i < len(fs); {
		j := i
		for j < len(fs) && fs[j].Severity == fs[i].Severity {
			j++
		}
		parts = append(parts, fmt.Sprintf("%d %s", j-i, fs[i].Severity))
		i = j
	}
	return strings.Join(parts, ", ")
}

// checkCounts summarises the checks' statuses: "18 passed, 3 found, 1
// skipped" (and errors, if any).
func checkCounts(cs []CheckResult) string {
	n := map[string]int{}
	for _, c := range cs {
		n[c.Status]++
	}
	s := fmt.Sprintf("%d passed, %d found, %d skipped", n[StatusPassed], n[StatusFound], n[StatusSkipped])
	if n[StatusError] > 0 {
		s += fmt.Sprintf(", %d failed", n[StatusError])
	}
	return s
}

func duration(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() }

func started(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// checkTitles maps the checks' ids to their titles.
func checkTitles() map[string]string {
	m := map[string]string{}
	for _, c := range Checks() {
		m[c.ID] = c.Title
	}
	return m
}

// writeJSON writes one report as an object, several as an array.
func writeJSON(b *bytes.Buffer, reports []*Report) error {
	out := make([]Report, len(reports))
	for i, r := range reports {
		out[i] = *r
		out[i].Grade = grade(r)
		if out[i].Findings == nil {
			out[i].Findings = []Finding{}
		}
		if out[i].Checks == nil {
			out[i].Checks = []CheckResult{}
		}
	}
	enc := json.NewEncoder(b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if len(out) == 1 {
		return enc.Encode(out[0])
	}
	return enc.Encode(out)
}
