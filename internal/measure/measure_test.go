package measure

import (
	"testing"
	"time"
)

func TestSequences(t *testing.T) {
	s := NewSequences()
	for _, seq := range []int64{1, 2, 3, 5, 6, 4, 6, 9, 10} { // 4 late, 6 twice, 7-8 lost
		s.Add("a", seq)
	}
	for seq := range int64(50) {
		s.Add("b", seq+1)
	}
	s.Add("b", 1) // b restarted
	s.Add("b", 2)
	got := s.Totals()
	want := Loss{Received: 61, Lost: 2, Duplicates: 1, Reordered: 1, Sources: 2}
	if got != want {
		t.Errorf("totals %+v, want %+v", got, want)
	}
}

func TestLatency(t *testing.T) {
	l := NewLatency()
	for i := 1; i <= 1000; i++ {
		l.Record(time.Duration(i) * time.Millisecond)
	}
	s := l.Summary()
	if s.Count != 1000 || s.P50ms < 499 || s.P50ms > 501 || s.P99ms < 989 || s.P99ms > 991 {
		t.Errorf("summary %+v", s)
	}
	l.Record(-time.Second) // a clock step must not break it
	l.Reset()
	if l.Count() != 0 {
		t.Error("reset kept values")
	}
}
