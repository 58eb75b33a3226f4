package audit

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
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

// checkTitles maps the registered checks' ids to their titles.
func checkTitles() map[string]string {
	m := map[string]string{}
	for _, c := range Checks() {
		m[c.ID] = c.Title
	}
	return m
}

// --- text ---

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

// --- json ---

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

// --- sarif ---

const (
	sarifSchema  = "https://json.schemastore.org/sarif-2.1.0.json"
	sarifVersion = "2.1.0"
	// sarifFingerprint is the key of a result's partialFingerprints.
	sarifFingerprint = "vigilFindingHash/v1"
	vigilURI         = "https://github.com/vigilhq/vigil"
)

type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool              sarifTool         `json:"tool"`
	Invocations       []sarifInvocation `json:"invocations"`
	AutomationDetails sarifAutomation   `json:"automationDetails"`
	Results           []sarifResult     `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	Version        string      `json:"version,omitempty"`
	InformationURI string      `json:"informationUri"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID                   string         `json:"id"`
	Name                 string         `json:"name"`
	ShortDescription     sarifText      `json:"shortDescription"`
	FullDescription      sarifText      `json:"fullDescription"`
	Help                 sarifText      `json:"help"`
	DefaultConfiguration sarifConfig    `json:"defaultConfiguration"`
	Properties           sarifRuleProps `json:"properties"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifConfig struct {
	Level string `json:"level"`
}

type sarifRuleProps struct {
	SecuritySeverity string   `json:"security-severity"`
	Tags             []string `json:"tags"`
}

type sarifResult struct {
	RuleID              string            `json:"ruleId"`
	RuleIndex           int               `json:"ruleIndex"`
	Level               string            `json:"level"`
	Message             sarifText         `json:"message"`
	Locations           []sarifLocation   `json:"locations"`
	PartialFingerprints map[string]string `json:"partialFingerprints"`
	Properties          sarifResultProps  `json:"properties"`
}

type sarifResultProps struct {
	Severity Severity `json:"severity"` // Vigil's own, finer than level
}

type sarifLocation struct {
	PhysicalLocation struct {
		ArtifactLocation struct {
			URI string `json:"uri"`
		} `json:"artifactLocation"`
	} `json:"physicalLocation"`
}

type sarifInvocation struct {
	ExecutionSuccessful bool                `json:"executionSuccessful"`
	StartTimeUTC        string              `json:"startTimeUtc,omitempty"`
	EndTimeUTC          string              `json:"endTimeUtc,omitempty"`
	Notifications       []sarifNotification `json:"toolExecutionNotifications,omitempty"`
}

type sarifNotification struct {
	Level   string    `json:"level"`
	Message sarifText `json:"message"`
}

type sarifAutomation struct {
	ID string `json:"id"`
}

// sarifLevel maps a severity to a SARIF level.
func sarifLevel(s Severity) string {
	switch {
	case s >= High:
		return "error"
	case s == Medium:
		return "warning"
	default:
		return "note"
	}
}

// securitySeverity is a CVSS-like score for a severity, which code-scanning
// UIs read from a rule's "security-severity" property.
func securitySeverity(s Severity) string {
	switch {
	case s >= Critical:
		return "9.5"
	case s == High:
		return "8.0"
	case s == Medium:
		return "5.5"
	case s == Low:
		return "3.0"
	default:
		return "0.0"
	}
}

// targetURI writes a target as a URI: URLs as they are, a bare host or
// host:port as mqtt://.
func targetURI(t string) string {
	if strings.Contains(t, "://") {
		return t
	}
	if _, _, err := net.SplitHostPort(t); err == nil {
		return "mqtt://" + t
	}
	h := strings.TrimSuffix(strings.TrimPrefix(t, "["), "]")
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return "mqtt://" + h
}

// fingerprint is a stable hash of a target and a check id; the n-th
// (from 2) finding of one check on one target adds n, so that
// code-scanning UIs keep them apart.
func fingerprint(target, id string, n int) string {
	s := target + "\x00" + id
	if n > 1 {
		s += "\x00" + strconv.Itoa(n)
	}
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// ruleName turns a check id into a SARIF rule name: no-tls → NoTls.
func ruleName(id string) string {
	var b strings.Builder
	for _, part := range strings.FieldsFunc(id, func(r rune) bool { return r == '-' || r == '_' }) {
		b.WriteString(upperFirst(part))
	}
	return b.String()
}

func writeSARIF(b *bytes.Buffer, reports []*Report, version string) error {
	titles := checkTitles()
	log := sarifLog{Schema: sarifSchema, Version: sarifVersion, Runs: []sarifRun{}}
	for _, r := range reports {
		log.Runs = append(log.Runs, sarifRunOf(r, version, titles))
	}
	enc := json.NewEncoder(b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(log)
}

func sarifRunOf(r *Report, version string, titles map[string]string) sarifRun {
	uri := targetURI(r.Target)
	run := sarifRun{
		Tool:        sarifTool{Driver: sarifDriver{Name: "vigil audit", Version: version, InformationURI: vigilURI, Rules: []sarifRule{}}},
		Invocations: []sarifInvocation{{ExecutionSuccessful: true}},
		Results:     []sarifResult{},
	}
	inv := &run.Invocations[0]
	instance := ""
	if !r.Started.IsZero() {
		const stamp = "2006-01-02T15:04:05.000Z"
		inv.StartTimeUTC = r.Started.UTC().Format(stamp)
		inv.EndTimeUTC = r.Started.Add(time.Duration(r.DurationMS) * time.Millisecond).UTC().Format(stamp)
		instance = r.Started.UTC().Format("20060102T150405Z")
	}
	// The category (up to the last slash) is per target, so that
	// code-scanning UIs track each target's findings apart.
	run.AutomationDetails.ID = "vigil-audit/" + uri + "/" + instance
	for _, c := range r.Checks {
		switch c.Status {
		case StatusSkipped:
			inv.Notifications = append(inv.Notifications, sarifNotification{Level: "note", Message: sarifText{Text: c.ID + " skipped: " + c.Note}})
		case StatusError:
			inv.Notifications = append(inv.Notifications, sarifNotification{Level: "error", Message: sarifText{Text: c.ID + " failed: " + c.Note}})
		}
	}

	// Rules: the checks that found something, in Order (others after).
	var ids []string
	for _, f := range r.Findings {
		if !slices.Contains(ids, f.ID) {
			ids = append(ids, f.ID)
		}
	}
	rank := func(id string) int {
		if i := slices.Index(Order, id); i >= 0 {
			return i
		}
		return len(Order)
	}
	slices.SortStableFunc(ids, func(a, b string) int { return rank(a) - rank(b) })
	index := map[string]int{}
	for i, id := range ids {
		index[id] = i
		worst := Info
		var found, fixes []string
		for _, f := range r.Findings {
			if f.ID != id {
				continue
			}
			worst = max(worst, f.Severity)
			if !slices.Contains(found, f.Title) {
				found = append(found, f.Title)
			}
			if f.Remediation != "" && !slices.Contains(fixes, f.Remediation) {
				fixes = append(fixes, f.Remediation)
			}
		}
		title := titles[id]
		if title == "" {
			title = found[0]
		}
		full := []string{title}
		for _, t := range found {
			if t != title {
				full = append(full, t)
			}
		}
		help := strings.Join(fixes, "\n\n")
		if help == "" {
			help = "See docs/audit.md in " + vigilURI + "."
		}
		run.Tool.Driver.Rules = append(run.Tool.Driver.Rules, sarifRule{
			ID:                   id,
			Name:                 ruleName(id),
			ShortDescription:     sarifText{Text: title},
			FullDescription:      sarifText{Text: strings.Join(full, "\n")},
			Help:                 sarifText{Text: help},
			DefaultConfiguration: sarifConfig{Level: sarifLevel(worst)},
			Properties:           sarifRuleProps{SecuritySeverity: securitySeverity(worst), Tags: []string{"security", "mqtt"}},
		})
	}

	seen := map[string]int{}
	for _, f := range r.Findings {
		seen[f.ID]++
		msg := f.Title
		if f.Evidence != "" {
			msg += "\n\n" + f.Evidence
		}
		res := sarifResult{
			RuleID:              f.ID,
			RuleIndex:           index[f.ID],
			Level:               sarifLevel(f.Severity),
			Message:             sarifText{Text: msg},
			PartialFingerprints: map[string]string{sarifFingerprint: fingerprint(r.Target, f.ID, seen[f.ID])},
			Properties:          sarifResultProps{Severity: f.Severity},
		}
		var loc sarifLocation
		loc.PhysicalLocation.ArtifactLocation.URI = uri
		res.Locations = []sarifLocation{loc}
		run.Results = append(run.Results, res)
	}
	return run
}

// --- html ---

//go:embed report.html.tmpl
var reportHTML string

var reportTemplate = template.Must(template.New("report").Parse(reportHTML))

type htmlPage struct {
	Title, Version, Generated string
	Reports                   []htmlReport
}

type htmlReport struct {
	Anchor, Target, Grade, GradeClass, Broker, Nmap string
	Started, Duration, Summary, CheckSummary        string
	Groups                                          []htmlGroup
	Checks                                          []htmlCheck
}

type htmlGroup struct {
	Name, Class string
	Findings    []Finding
}

type htmlCheck struct{ ID, Title, Status, Note, Duration string }

func writeHTML(b *bytes.Buffer, reports []*Report, version string) error {
	titles := checkTitles()
	page := htmlPage{Version: version, Generated: started(time.Now())}
	switch len(reports) {
	case 1:
		page.Title = "Vigil audit of " + clean(reports[0].Target) + ": grade " + grade(reports[0])
	default:
		page.Title = fmt.Sprintf("Vigil audit of %d targets", len(reports))
	}
	for i, r := range reports {
		g := grade(r)
		hr := htmlReport{
			Anchor:       fmt.Sprintf("target-%d", i+1),
			Target:       clean(r.Target),
			Grade:        g,
			GradeClass:   "grade-" + strings.ToLower(g),
			Broker:       clean(r.Broker),
			Nmap:         clean(r.Nmap),
			Started:      started(r.Started),
			Duration:     duration(r.DurationMS),
			Summary:      severityCounts(r.Findings),
			CheckSummary: upperFirst(checkCounts(r.Checks)),
		}
		if hr.Nmap == "" {
			hr.Nmap = "not run"
		}
		for _, f := range bySeverity(r.Findings) {
			if n := len(hr.Groups); n == 0 || hr.Groups[n-1].Findings[0].Severity != f.Severity {
				class := "sev-other"
				if f.Severity >= Info && f.Severity <= Critical {
					class = "sev-" + f.Severity.String()
				}
				hr.Groups = append(hr.Groups, htmlGroup{Name: upperFirst(f.Severity.String()), Class: class})
			}
			g := &hr.Groups[len(hr.Groups)-1]
			f.ID, f.Title, f.Evidence, f.Remediation = clean(f.ID), clean(f.Title), clean(f.Evidence), clean(f.Remediation)
			g.Findings = append(g.Findings, f)
		}
		for _, c := range r.Checks {
			status := c.Status
			if status == StatusError {
				status = "failed"
			}
			hr.Checks = append(hr.Checks, htmlCheck{ID: c.ID, Title: titles[c.ID], Status: status, Note: clean(c.Note), Duration: duration(c.DurationMS)})
		}
		page.Reports = append(page.Reports, hr)
	}
	return reportTemplate.Execute(b, page)
}
