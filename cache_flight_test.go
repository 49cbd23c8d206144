package llmrouter

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
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
	if got := s.entries.Limit(); got != size-4096-64*endSize {
		t.Errorf("stored answers may use %d bytes while 4 KiB of events and 64 ends are in flight, want %d", got, size-4096-64*endSize)
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

// TestFlightTinyEventsCountAgainstMaxSize: what a flight holds for each
// event, where it ends, counts against max_size too: a provider that
// streams tiny events (":\n\n" keep-alives) made the ends, 8 bytes an
// event of 3, hold nearly three times the bytes reserved.
func TestFlightTinyEventsCountAgainstMaxSize(t *testing.T) {
	const size = 1 << 20
	s := newCacheStore(size)
	f, _ := s.join(answerKey{5})
	f.startStream("m", "p")
	for i := 0; f.publish([]byte(":\n\n")); i++ {
		if held := int64(cap(f.events) + 8*cap(f.ends)); held > s.inFlight {
			t.Fatalf("after %d events the flight holds %d bytes, %d reserved", i+1, held, s.inFlight)
		}
	}
	if held := cap(f.events) + 8*cap(f.ends); held > size/maxEntryShare {
		t.Errorf("the flight held %d bytes, beyond an answer's share %d", held, size/maxEntryShare)
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

// TestFlightJoinBoundsABlockedLeader: a leader whose client stopped reading
// before anyone followed is blocked in a write with no deadline (its
// relay bounds writes only while the flight has followers). A follower's
// join bounds that write: it fails within leaderWriteGrace, the leader's
// client is dropped and the stream is read on for the follower.
func TestFlightJoinBoundsABlockedLeader(t *testing.T) {
	defer func(old time.Duration) { leaderWriteGrace = old }(leaderWriteGrace)
	leaderWriteGrace = 50 * time.Millisecond
	s := newCacheStore(1 << 20)
	f, _ := s.join(answerKey{5})
	f.startStream("m", "p")
	// a net.Pipe write waits for a reader that never comes, as a stalled
	// client's socket does, and its deadline applies to a write in progress
	client, stalled := net.Pipe()
	defer stalled.Close()
	w := &deadlineKeeper{ResponseWriter: pipeResponse{client}}
	stop := f.watchLeaderWrites(w, w.SetWriteDeadline)
	relay := &streamRelay{api: openai.Chat, flight: f}
	events := openai.NewEventReader(strings.NewReader(relayContent + relayContent + relayDone))
	defer events.Release()
	first, _ := events.Next()
	relayed, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		relayed <- relay.relay(w, noFlush, events, first)
	}()
	defer func() { client.Close(); <-exited }() // the relay is done with events before they are released
	// the first event is published before it is written: the relay is past
	// its last bound, in (or on its way into) a write nobody reads
	v, _ := f.await(context.Background(), 0)
	for len(v.ends) == 0 {
		v, _ = f.await(context.Background(), v.version)
	}
	if _, leader := s.join(answerKey{5}); leader {
		t.Fatal("the second request did not follow")
	}
	if err := waitFor(t, relayed, "the blocked leader's relay to read on for its follower"); err != nil || !relay.done {
		t.Errorf("relay: %v, done %t; want the stream read to its end", err, relay.done)
	}
	if v, _ := f.await(context.Background(), 0); len(v.ends) != 3 {
		t.Errorf("%d events published, want 3", len(v.ends))
	}
	stop()
	f.leave()
	f.land(nil, 0, "USD")
	if f.leaderDeadline != nil || f.leaderResponse != nil || f.deadlineArmed {
		t.Error("the flight still holds the leader's write deadline after the stream")
	}
}

// pipeResponse is a response written to one end of a net.Pipe, whose
// write deadline applies to a write in progress, as a connection's does.
type pipeResponse struct{ net.Conn }

func (pipeResponse) Header() http.Header { return http.Header{} }
func (pipeResponse) WriteHeader(int)     {}

// deadlineKeeper wraps a response as Caddy's IdleTimeoutWriter does: it
// keeps the deadline a handler sets in a field that its writes read, on
// the handler's goroutine (a follower's join must not set it).
type deadlineKeeper struct {
	http.ResponseWriter
	deadline time.Time
}

func (k *deadlineKeeper) SetWriteDeadline(d time.Time) error {
	k.deadline = d
	return http.NewResponseController(k.ResponseWriter).SetWriteDeadline(d)
}

func (k *deadlineKeeper) Write(p []byte) (int, error) {
	if !k.deadline.IsZero() && !time.Now().Before(k.deadline) {
		return 0, os.ErrDeadlineExceeded
	}
	return k.ResponseWriter.Write(p)
}

func (k *deadlineKeeper) Unwrap() http.ResponseWriter { return k.ResponseWriter }
