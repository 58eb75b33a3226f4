package audit

// The SARIF 2.1.0 report, for code-scanning tools.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
