package llmrouter

import (
	"context"
	"strings"
	"testing"
)

// TestFlightEventsCountAgainstMaxSize: a stream in flight shrinks what
// stored answers may use by what it holds, gives it back when it lands,
// and breaks for its followers when it outgrows an answer's share.
func TestFlightEventsCountAgainstMaxSize(t *testing.T) {
	const size = 1 << 20
	s := newCacheStore(size)
	f, leader := s.join(answerKey{1})
	if !leader {
		t.Fatal("the first request does not lead")
	}
	f.startStream("m", "p")
	ev := []byte("data: {\"choices\":[]}\n\n")
	if !f.publish(ev) {
		t.Fatal("publish refused a small event")
	}
	if got := s.entries.Limit(); got != size-4096 {
		t.Errorf("stored answers may use %d bytes while 4 KiB are in flight, want %d", got, size-4096)
	}
	f.land(nil, 0, "USD")
	if got := s.entries.Limit(); got != size {
		t.Errorf("stored answers may use %d bytes after the flight landed, want %d", got, size)
	}

	g, _ := s.join(answerKey{2})
	g.startStream("m", "p")
	big := []byte("data: " + strings.Repeat("x", size/maxEntryShare) + "\n\n")
	if g.publish(big) {
		t.Fatal("an event beyond an answer's share of max_size was published")
	}
	if v, _ := g.await(context.Background(), 0); v.state != flightBroken || v.broke == "" {
		t.Errorf("state %d (%q), want broken with a reason", v.state, v.broke)
	}
	if s.inFlight != 0 || s.entries.Limit() != size {
		t.Errorf("%d bytes still reserved", s.inFlight)
	}
	if _, leader := s.join(answerKey{2}); !leader {
		t.Error("a broken flight is still joined")
	}
}

// TestFlightFollowersKeepTheLeaderReading: a leader whose client leaves
// reads on while a follower reads; the upstream request is canceled when
// the last reader leaves.
func TestFlightFollowersKeepTheLeaderReading(t *testing.T) {
	s := newCacheStore(1 << 20)
	f, _ := s.join(answerKey{3})
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	follower, leader := s.join(answerKey{3})
	if leader || follower != f {
		t.Fatal("the second request did not follow")
	}
	if !f.leaderLeft() {
		t.Fatal("the leader stopped reading with a follower waiting")
	}
	if ctx.Err() != nil {
		t.Fatal("canceled with a follower reading")
	}
	f.leave()
	if ctx.Err() == nil {
		t.Error("the upstream request outlived its last reader")
	}

	// without followers, the leader's client leaving ends it at once
	g, _ := s.join(answerKey{4})
	ctx, cancel = context.WithCancel(context.Background())
	g.cancel = cancel
	if g.leaderLeft() || ctx.Err() == nil {
		t.Error("a leader nobody follows read on after its client left")
	}
}
