package llmrouter

import (
	"context"
	"math/bits"
	"net/http"
	"sync"
	"time"
)

// cacheFlight is a request on its way to a model that identical requests
// (the same key) follow rather than asking a model themselves: single
// flight. Its leader publishes the answer as it arrives, a stream event by
// event, a JSON answer whole; each follower relays what is published at its
// own pace, from the first event, whenever it joined. A flight not in the
// store's map (private) has no followers: it only collects a stream for
// the store.
type cacheFlight struct {
	store  *cacheStore
	key    answerKey
	shared bool // in store.flights: others may follow it

	mu      sync.Mutex
	wake    chan struct{} // made by a waiter, closed at the next change
	version uint64        // counts changes
	state   flightState
	// the deployment whose stream is published, from flightStreaming on
	model, provider string
	events          []byte // the stream so far, whole events, the usage chunk included
	ends            []int  // where each event ends in events
	reserved        int64  // bytes of the store's max_size that events and ends hold
	entry           *cacheEntry
	cost            float64 // what the answer cost the leader, once landed
	currency        string
	broke           string // why a stream broke, for its followers' error event
	followers       int
	leaderGone      bool
	cancel          context.CancelFunc // ends the leader's upstream request once nobody reads it
	// the leader's client while the leader relays the stream
	// (watchLeaderWrites): its write deadline through every wrapper of
	// the response, for the leader's goroutine (boundLeaderWrites), and
	// the response, for a follower's join (boundBlockedLeader);
	// deadlineArmed: a deadline is set; leaderWriting: the relay is
	// writing an event, not waiting for the provider's next one
	leaderDeadline func(time.Time) error
	leaderResponse http.ResponseWriter
	deadlineArmed  bool
	leaderWriting  bool
}

type flightState uint8

const (
	flightWaiting   flightState = iota // the leader has no answer yet
	flightStreaming                    // a stream's events are being published
	flightLanded                       // the answer is complete (entry: as JSON, when it could be kept)
	flightFailed                       // no answer to share: followers ask a model themselves
	flightBroken                       // the stream broke after events were published
)

// flightView is what a follower sees of a flight at one moment. events and
// ends are prefixes that the leader only ever appends to: they can be read
// without the lock.
type flightView struct {
	version         uint64
	state           flightState
	model, provider string
	events          []byte
	ends            []int
	entry           *cacheEntry
	cost            float64
	currency        string
	broke           string
}

// changed records a change and wakes the followers; f.mu is held.
func (f *cacheFlight) changed() {
	f.version++
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

// await returns the flight as soon as it differs from version seen, or
// false when ctx ends first.
func (f *cacheFlight) await(ctx context.Context, seen uint64) (flightView, bool) {
	for {
		f.mu.Lock()
		if f.version != seen {
			v := flightView{version: f.version, state: f.state, model: f.model, provider: f.provider,
				events: f.events, ends: f.ends, entry: f.entry, cost: f.cost, currency: f.currency, broke: f.broke}
			f.mu.Unlock()
			return v, true
		}
		if f.wake == nil {
			f.wake = make(chan struct{})
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return flightView{}, false
		}
	}
}

// startStream says that the leader relays a stream of model at provider.
func (f *cacheFlight) startStream(model, provider string) {
	f.mu.Lock()
	f.state, f.model, f.provider = flightStreaming, model, provider
	f.changed()
	f.mu.Unlock()
}

// publish adds one event of the leader's stream. It returns false, and
// breaks the flight, when the stream outgrows what the store lets a flight
// hold (its share of max_size, which the events count against).
func (f *cacheFlight) publish(ev []byte) bool {
	f.mu.Lock()
	if f.state != flightStreaming {
		f.mu.Unlock()
		return false
	}
	// both buffers grow here, by doubling, so that what they hold is
	// what is reserved: the ends too, 8 bytes an event, which a stream of
	// tiny events (":\n\n" keep-alives) makes most of it
	evCap, endsCap := cap(f.events), cap(f.ends)
	if need := len(f.events) + len(ev); need > evCap {
		evCap = max(2*evCap, need, 4096)
	}
	if len(f.ends) == endsCap {
		endsCap = max(2*endsCap, 64)
	}
	if held := int64(evCap + endSize*endsCap); held > f.reserved {
		if !f.store.reserve(held-f.reserved, held) {
			f.mu.Unlock()
			f.fail("the answer is too large to share")
			return false
		}
		f.reserved = held
	}
	if evCap > cap(f.events) {
		b := make([]byte, len(f.events), evCap)
		copy(b, f.events)
		f.events = b
	}
	if endsCap > cap(f.ends) {
		e := make([]int, len(f.ends), endsCap)
		copy(e, f.ends)
		f.ends = e
	}
	f.events = append(f.events, ev...)
	f.ends = append(f.ends, len(f.events))
	f.changed()
	f.mu.Unlock()
	return true
}

// endSize is what an entry of cacheFlight.ends holds, in bytes.
const endSize = bits.UintSize / 8

// land ends the flight with its answer: e is it as JSON (nil when it
// could not be kept), cost what it cost the leader.
func (f *cacheFlight) land(e *cacheEntry, cost float64, currency string) {
	f.end(func() {
		f.state, f.entry, f.cost, f.currency = flightLanded, e, cost, currency
	})
}

// fail ends the flight without an answer to share: followers that have
// not relayed anything ask a model themselves; those that have end their
// stream with why.
func (f *cacheFlight) fail(why string) {
	f.end(func() {
		if f.state == flightStreaming {
			f.breakLocked(why)
		} else if f.state == flightWaiting {
			f.state = flightFailed
		}
	})
}

func (f *cacheFlight) breakLocked(why string) {
	f.state, f.broke = flightBroken, why
	f.store.release(f.reserved)
	f.reserved = 0
	f.changed()
}

// end takes the flight out of the store's map (no one joins it after
// this), then sets its final state with set, once.
func (f *cacheFlight) end(set func()) {
	if f.shared {
		f.store.mu.Lock()
		if f.store.flights[f.key] == f {
			delete(f.store.flights, f.key)
		}
		f.store.mu.Unlock()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state >= flightLanded { // landed, failed or broken: final
		return
	}
	set()
	f.store.release(f.reserved)
	f.reserved = 0
	// no one follows the stream from here: the leader's writes are its
	// client's alone (a relay whose flight broke no longer bounds them)
	if f.deadlineArmed {
		_ = f.leaderDeadline(time.Time{})
	}
	f.leaderDeadline, f.leaderResponse, f.deadlineArmed = nil, nil, false
	f.changed()
}

// hasFollowers reports whether anyone follows the flight now.
func (f *cacheFlight) hasFollowers() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.followers > 0
}

// watchLeaderWrites hands the flight the leader's client while the leader
// relays the stream to it: w, its response, and setDeadline, its write
// deadline through every wrapper of w. The returned func takes them back
// and clears the deadline; the leader calls it before its handler
// returns, after which w must not be used.
func (f *cacheFlight) watchLeaderWrites(w http.ResponseWriter, setDeadline func(time.Time) error) (stop func()) {
	f.mu.Lock()
	f.leaderDeadline, f.leaderResponse = setDeadline, w
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.leaderDeadline, f.leaderResponse, f.deadlineArmed = nil, nil, false
		_ = setDeadline(time.Time{})
	}
}

// boundLeaderWrites gives the leader's next write to its client
// leaderWriteGrace while the flight has followers, and no bound otherwise;
// the leader's relay calls it before each write. Under f.mu, so that a
// relay that saw no followers cannot clear what a join set.
func (f *cacheFlight) boundLeaderWrites() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaderWriting = true
	switch {
	case f.leaderDeadline == nil:
	case f.followers > 0:
		_ = f.leaderDeadline(time.Now().Add(leaderWriteGrace))
		f.deadlineArmed = true
	case f.deadlineArmed:
		_ = f.leaderDeadline(time.Time{})
		f.deadlineArmed = false
	}
}

// leaderWaits lifts the bound while the leader's relay waits for the
// provider's next event, which is no write of its client's: an HTTP/2
// stream is reset when its write deadline passes, even with no write
// pending, so a bound left armed would cut a client that reads well
// whenever the provider pauses longer than leaderWriteGrace.
func (f *cacheFlight) leaderWaits() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaderWriting = false
	if f.deadlineArmed && f.leaderDeadline != nil {
		_ = f.leaderDeadline(time.Time{})
		f.deadlineArmed = false
	}
}

// boundBlockedLeader bounds, as a follower joins, a write the leader may
// have been blocked in since before anyone followed (boundLeaderWrites
// bounds none without followers): a connection's deadline applies to a
// write in progress. A leader waiting for the provider is left alone
// (leaderWaits): boundLeaderWrites bounds its next write. The deadline is
// set on the innermost writer of the response, which any goroutine may
// call: Caddy's wrappers keep a handler's deadline in fields of their
// own, for the handler's goroutine, and the relay sets it through them
// before its next write.
func (f *cacheFlight) boundBlockedLeader() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leaderResponse == nil || f.followers == 0 || !f.leaderWriting {
		return
	}
	w := f.leaderResponse
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	if http.NewResponseController(w).SetWriteDeadline(time.Now().Add(leaderWriteGrace)) == nil {
		f.deadlineArmed = true
	}
}

// leaderLeft says that the leader's client went away. It reports whether
// the leader should go on reading its upstream answer for followers;
// otherwise the upstream request is canceled.
func (f *cacheFlight) leaderLeft() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaderGone = true
	if f.followers > 0 {
		return true
	}
	if f.cancel != nil {
		f.cancel()
	}
	return false
}

// leave is a follower's goodbye; the last one out after the leader's
// client cancels the upstream request nobody reads.
func (f *cacheFlight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.followers--
	if f.followers == 0 && f.leaderGone && f.cancel != nil {
		f.cancel()
	}
}

// join makes the caller the leader of key's flight (a new one, which it
// must end), or a follower of the flight in progress (which it must leave).
func (s *cacheStore) join(key answerKey) (f *cacheFlight, leader bool) {
	s.mu.Lock()
	if f = s.flights[key]; f == nil {
		f = &cacheFlight{store: s, key: key, shared: true}
		s.flights[key] = f
		s.mu.Unlock()
		return f, true
	}
	f.mu.Lock()
	f.followers++
	f.mu.Unlock()
	s.mu.Unlock()
	// a leader whose client stopped reading before anyone followed is
	// blocked in a write with no bound: this follower must not wait on it
	// longer than leaderWriteGrace (outside the store's lock: an HTTP/2
	// deadline is a message to the connection's goroutine)
	f.boundBlockedLeader()
	return f, false
}

// flying reports whether a request for key is on its way to a model.
func (s *cacheStore) flying(key answerKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flights[key] != nil
}

// privateFlight collects a stream for the store with no one following.
func (s *cacheStore) privateFlight(key answerKey) *cacheFlight {
	return &cacheFlight{store: s, key: key}
}

// reserve counts n more bytes of events in flight against max_size, by
// shrinking what stored answers may use; false if the flight would then
// hold more than one answer may (size, its new total) or the flights more
// than half the store.
func (s *cacheStore) reserve(n, size int64) bool {
	s.sizeMu.Lock()
	defer s.sizeMu.Unlock()
	if size > s.maxSize/maxEntryShare || s.inFlight+n > s.maxSize/2 {
		return false
	}
	s.inFlight += n
	s.entries.SetLimit(s.maxSize - s.inFlight)
	return true
}

// release gives back n bytes reserved by a flight.
func (s *cacheStore) release(n int64) {
	if n == 0 {
		return
	}
	s.sizeMu.Lock()
	defer s.sizeMu.Unlock()
	s.inFlight -= n
	s.entries.SetLimit(s.maxSize - s.inFlight)
}
