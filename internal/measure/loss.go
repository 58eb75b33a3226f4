package measure

import "sync"

// Sequences tracks per-source sequence numbers to count messages received,
// lost (gaps), duplicated and reordered. A source that restarts its counter
// (seq going back to 0 or 1 after larger values) is taken as a restart, not
// as duplicates. It is safe for concurrent use.
type Sequences struct {
	mu      sync.Mutex
	sources map[string]*seqState
	totals  Loss
}

type seqState struct {
	max  int64
	gaps map[int64]struct{} // seqs below max not seen yet, to tell late from lost
}

// Loss is what Sequences found.
type Loss struct {
	Received   int64 `json:"received"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	Reordered  int64 `json:"reordered"`
	Sources    int   `json:"sources"`
}

// NewSequences returns an empty tracker.
func NewSequences() *Sequences { return &Sequences{sources: map[string]*seqState{}} }

// Add records message seq from source.
func (s *Sequences) Add(source string, seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.totals.Received++
	st, ok := s.sources[source]
	if !ok {
		s.sources[source] = &seqState{max: seq, gaps: map[int64]struct{}{}}
		return
	}
	switch {
	case seq == st.max+1:
		st.max = seq
	case seq > st.max:
		if len(st.gaps) > 100000 { // bound memory; what is in there stays counted lost
			clear(st.gaps)
		}
		for missing := st.max + 1; missing < seq && missing < st.max+100000; missing++ {
			st.gaps[missing] = struct{}{}
		}
		s.totals.Lost += seq - st.max - 1
		st.max = seq
	case seq <= 1 && st.max > 10:
		// the source restarted its counter
		clear(st.gaps)
		st.max = seq
	default:
		if _, gap := st.gaps[seq]; gap {
			delete(st.gaps, seq) // a gap filled late: reordered, not lost
			s.totals.Lost--
			s.totals.Reordered++
		} else {
			s.totals.Duplicates++
		}
	}
}

// Totals returns the counts so far.
func (s *Sequences) Totals() Loss {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.totals
	t.Sources = len(s.sources)
	return t
}
