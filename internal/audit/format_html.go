package audit

// The HTML report, one page.

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"strings"
	"time"
)

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
