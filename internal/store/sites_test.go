package store

import (
	"context"
	"testing"
)

// A site's plan is answered from memory, as stored: after SetPlan, after a
// reopen, and "" once it is cleared.
func TestSitePlanIsTheStoredOne(t *testing.T) {
	ctx := context.Background()
	path := testDSN(t)
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPlan(ctx, "shop", "plus"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPlan(ctx, "home", "basic"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPlan(ctx, "home", ""); err != nil {
		t.Fatal(err)
	}
	if got := s.SitePlan("shop"); got != "plus" {
		t.Errorf("shop's plan %q, want plus", got)
	}
	if got := s.SitePlan("home"); got != "" {
		t.Errorf("home's plan %q after clearing it, want none", got)
	}
	s.Close()
	if s, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, other := s.SitePlan("shop"), s.SitePlan("home"); got != "plus" || other != "" {
		t.Errorf("after reopening: shop's plan %q, home's %q; want plus and none", got, other)
	}
}
