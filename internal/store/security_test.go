package store

import (
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/audit"
	"github.com/vigilhq/vigil/internal/watch"
)

// Audits are stored whole and listed newest first with their worst
// severity and the count of findings above info.
func TestAuditsRoundTrip(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, grade := range []string{"A", "D"} {
		r := &audit.Report{Target: "mqtt://127.0.0.1:1883", Grade: grade, Started: t0.Add(time.Duration(i) * time.Hour), DurationMS: 1200,
			Findings: []audit.Finding{{ID: "open-ports", Severity: audit.Info, Title: "1 port"}}}
		if grade == "D" {
			r.Findings = append(r.Findings, audit.Finding{ID: "no-tls", Severity: audit.High, Title: "no TLS", Evidence: "plain", Remediation: "tls"})
		}
		if _, err := s.SaveAudit(ctx, r, "start"); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListAudits(ctx, 10)
	if err != nil || len(list) != 2 || list[0].Grade != "D" || list[0].Worst != "high" || list[0].Findings != 1 || list[1].Findings != 0 {
		t.Fatalf("audits %+v %v", list, err)
	}
	newest, err := s.GetAudit(ctx, 0)
	if err != nil || newest.ID != list[0].ID || len(newest.Report.Findings) != 2 || newest.Report.Findings[1].Severity != audit.High {
		t.Fatalf("newest %+v %v", newest, err)
	}
	if _, err := s.GetAudit(ctx, 999); err == nil {
		t.Error("a missing audit: no error")
	}
}

// An outage is saved at its start and updated at its end; a lookback
// finds the ones under way since then.
func TestOutagesAndProbes(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := &watch.Outage{Target: "b", Start: t0, Reason: "connection refused"}
	if err := s.SaveOutage(ctx, o); err != nil {
		t.Fatal(err)
	}
	old := &watch.Outage{Target: "b", Start: t0.Add(-48 * time.Hour)}
	end := old.Start.Add(time.Minute)
	old.End = &end
	s.SaveOutage(ctx, old)
	if os, _ := s.ListOutages(ctx, "b", t0.Add(-time.Hour)); len(os) != 1 || os[0].End != nil {
		t.Fatalf("open outages %+v", os)
	}
	e := t0.Add(90 * time.Second)
	o.End = &e
	if err := s.SaveOutage(ctx, o); err != nil {
		t.Fatal(err)
	}
	os, _ := s.ListOutages(ctx, "b", t0.Add(-time.Hour))
	if len(os) != 1 || os[0].End == nil || !os[0].End.Equal(e) || os[0].Reason != "connection refused" {
		t.Fatalf("after recovery %+v", os)
	}
	for i := range 3 {
		s.SaveProbe(ctx, watch.Probe{Target: "b", At: t0.Add(time.Duration(i) * time.Second), OK: i != 1, RoundTripMS: 1.5, Sys: map[string]string{"$SYS/x": "1"}})
	}
	ps, err := s.ListProbes(ctx, "b", t0, 10)
	if err != nil || len(ps) != 3 || ps[1].OK || ps[2].Sys["$SYS/x"] != "1" {
		t.Fatalf("probes %+v %v", ps, err)
	}
}
