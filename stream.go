package llmrouter

// This file reads and relays SSE streams: it knows events, not attempts.
// handler.go decides when a stream is committed and what its end means.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
)

// errWritingDownstream wraps errors from writing to the client, to tell a
// client that went away from an upstream that failed: only the latter counts
// against the deployment.
var errWritingDownstream = errors.New("writing to the client")

// streamRelay writes events to the client, pulling the usage out on the way.
type streamRelay struct {
	strip bool       // the client did not ask for usage: drop the usage-only chunk
	scrub *scrubber  // provider keys out of what the provider wrote: an error event may echo the request
	api   openai.API // whose streamed text is counted, for an estimate
	// idle, when set, ends the stream when the relay has waited that long
	// for the provider's next event: time spent writing to a slow client
	// is the client's, never the provider's silence
	idle *idleWatch

	// flight, when not nil, gets every upstream event (usage chunk
	// included): the response cache's followers relay them, and the
	// cache keeps the stream. Dropped (nil) when the flight cannot take
	// more. A shared flight bounds each write to the client while it has
	// followers (cacheFlight.boundLeaderWrites): a leader's client that
	// stops reading is dropped rather than hold them back.
	flight *cacheFlight

	// opening: a Responses API stream's opening events (response.created,
	// response.in_progress), or a chat stream's prompt filter results
	// (Azure OpenAI's, openai.ChatPromptFilter), held until its first
	// output came: relayed before it (and before role)
	opening [][]byte
	// role: a chat stream's role chunk (openai.ChatOpening), held and
	// relayed as opening is; apart, as there is one only: a slice of
	// slices would cost an allocation of every stream
	role []byte

	// wantID: a Responses API stream, whose response id (responseID,
	// from its first events) the router remembers (response_homes.go)
	wantID     bool
	responseID string

	// onClientGone, when set, is called once when the client cannot be
	// written to and nobody else reads the stream: the relay reads on,
	// discarding, until the stream's end or until the attempt is cut
	// (abandonedStreamGrace), so that what the provider sent meanwhile is
	// counted, usage included
	onClientGone func()

	// out holds the events forwarded since the last write (emit): a
	// burst is written in one call through the response writer's
	// layers, each of which costs per call (Caddy's write deadline is
	// reset on every one), rather than in one call an event. Taken from
	// relayBatches when needed and given back once written, so an idle
	// stream holds none.
	out *[]byte

	usage        usage  // the provider's, when found (by value: most streams have one, and a pointer allocated it)
	found        bool   // the stream carried usage
	bytesAtUsage int64  // textBytes when usage was last seen: text after it is not in it
	done         bool   // saw [DONE], or a Responses API stream's end (responseEnded)
	failed       bool   // the provider sent an error event: the stream failed, whatever followed
	requests     bool   // its first error event blames the request, not the provider (openai.RequestsFault)
	requestsErr  []byte // that event's data, when requests: the error the client is told (openai.ErrorEnvelope)
	rateLimited  bool   // its first error event is a rate limit, as a 429 is (openai.RateLimited)
	raised       bool   // one the official SDKs raise on (openai.SDKsRaise)
	textBytes    int64  // UTF-8 bytes of text streamed, to estimate usage (openai.StreamTextBytes)
	events       int    // events relayed
}

// relay writes first, then every following event of events, to w. Each
// event is flushed as soon as no further complete event is already waiting:
// event by event for a live stream, one write for a burst that arrived
// together. The first event is flushed at once, whatever follows it: the
// time to the first token is what a client waits on. relay returns nil
// right after the stream's last event ([DONE], or a Responses API
// stream's end), which it does not flush: the end of the client's
// response writes it, with the chunked body's end, and the provider's end
// of its response is not the client's wait (drainStreamEnd reads it
// afterwards). It returns nil too at a clean end of the response before
// that event (done tells the two apart), an error wrapping
// errWritingDownstream when the client could not be written to, or the
// upstream's read error. A client that goes away while followers of the
// flight read the stream stops being written to, and the stream is read
// on for them; one that goes away with nobody following still has the
// stream read on (onClientGone), and the relay then returns its error.
func (s *streamRelay) relay(w io.Writer, flush func() error, events *openai.EventReader, first []byte) error {
	s.waiting(false)
	s.boundWrites()
	// the bound on the writes ends with the relay: the stream's last
	// event is written with the end of the response, after the answer is
	// kept (which may take longer than the bound for a large one), and an
	// HTTP/2 stream is reset when its deadline passes, write pending or not
	defer s.unboundWrites()
	defer s.dropOut()
	var err error
	for _, ev := range s.opening {
		if err = s.forward(w, ev); err != nil {
			break
		}
	}
	s.opening = nil
	if err == nil && s.role != nil {
		err = s.forward(w, s.role)
	}
	s.role = nil
	if err == nil {
		err = s.forward(w, first)
	}
	if err == nil {
		err = s.emit(w)
	}
	if err == nil && s.done {
		return nil
	}
	if err == nil {
		err = flush()
	}
	var gone error // the client's write error, once the rest is only read
	for {
		if err != nil {
			s.dropOut()
			if s.flight == nil || !s.flight.leaderLeft() {
				if s.onClientGone == nil {
					break
				}
				// what the provider generated while the client did not
				// read sits in the sockets' buffers, and is billed
				s.onClientGone()
				gone = fmt.Errorf("%w: %w", errWritingDownstream, err)
			}
			w, flush, err = io.Discard, noFlush, nil
		}
		s.unboundWrites()
		s.waiting(true)
		ev, rerr := events.Next()
		s.waiting(false)
		s.boundWrites()
		if rerr != nil {
			if rerr == io.ErrUnexpectedEOF {
				s.notePartial(events.Partial())
			}
			switch {
			case gone != nil:
				return gone
			case rerr == io.EOF:
				return nil
			}
			return rerr
		}
		err = s.forward(w, ev)
		ready := err == nil && !s.done && events.Ready()
		if err == nil && !ready {
			err = s.emit(w)
		}
		if err == nil && s.done {
			return gone
		}
		if err == nil && !ready {
			err = flush()
		}
	}
	return fmt.Errorf("%w: %w", errWritingDownstream, err)
}

// leaderWriteGrace is how long a write to the client of a stream that
// others follow may take: a client that stops reading holds its followers
// back no longer than this (it is dropped, and the stream goes on for
// them). Socket buffers take a normal event at once.
var leaderWriteGrace = 5 * time.Second

// boundWrites gives the next write to the client leaderWriteGrace while
// the flight has followers, and no bound otherwise (a private flight has
// none: it is not asked).
func (s *streamRelay) boundWrites() {
	if s.flight != nil && s.flight.shared {
		s.flight.boundLeaderWrites()
	}
}

// unboundWrites lifts that bound while the relay waits for the provider
// (cacheFlight.leaderWaits): the wait is not the client's.
func (s *streamRelay) unboundWrites() {
	if s.flight != nil && s.flight.shared {
		s.flight.leaderWaits()
	}
}

// waiting tells the idle watch when the relay waits for the provider.
func (s *streamRelay) waiting(on bool) {
	if s.idle != nil {
		s.idle.waiting(on)
	}
}

// abandonedStreamGrace is how long a stream whose client has left (and
// that nobody follows) is read on, discarding, before its upstream request
// is canceled: what the provider sent while the client stopped reading
// is in the sockets' buffers, read in milliseconds, and its usage is the
// bill; a provider still generating is stopped this much later.
var abandonedStreamGrace = 250 * time.Millisecond

// errStreamAbandoned is the cause of an attempt cut when its client left.
var errStreamAbandoned = errors.New("the client left the stream")

// idleWatch ends a stream whose provider stays silent for after while the
// relay waits for it (stream_idle_timeout): no bytes, not no event, as an
// event may be large and arrive slowly (progressReader). A timer reset as each wait
// starts and stopped as it ends cost two timer operations an event; the
// relay instead notes when each wait starts and that it ended (a clock
// read and an atomic store), and the timer, armed once, checks when it
// fires whether the wait in progress has lasted after, re-arming for what
// is left of it (or for a whole after, when none is in progress). It
// cancels at the same moment the reset timer did: after of silence.
type idleWatch struct {
	after  time.Duration
	cancel context.CancelCauseFunc // called with errStreamIdle
	base   time.Time               // the origin of since, on the monotonic clock
	// since is when the wait in progress began, in nanoseconds after
	// base, plus one; 0 when the relay is not waiting
	since   atomic.Int64
	stopped atomic.Bool
	timer   *time.Timer
	// reads counts the reads from the provider in the wait in progress
	// (the relay's goroutine only): bytes that keep coming, a large
	// event's, are no silence (progress)
	reads int
}

// newIdleWatch starts watching; the relay is not waiting yet.
func newIdleWatch(after time.Duration, cancel context.CancelCauseFunc) *idleWatch {
	w := &idleWatch{after: after, cancel: cancel, base: time.Now()}
	// armed once w.timer is set, which check reads
	w.timer = time.AfterFunc(time.Duration(math.MaxInt64), w.check)
	w.timer.Reset(after)
	return w
}

func (w *idleWatch) waiting(on bool) {
	if on {
		w.reads = 0
		w.since.Store(int64(time.Since(w.base)) + 1)
	} else {
		w.since.Store(0)
	}
}

// progress notes a read of the provider's bytes: the silence of the wait
// in progress starts again. The first read of a wait costs no clock read:
// it is its end in the common case (an event arrives in one read), and
// one that brings part of an event only is timed at the next.
func (w *idleWatch) progress() {
	if w.reads++; w.reads > 1 && w.since.Load() != 0 {
		w.since.Store(int64(time.Since(w.base)) + 1)
	}
}

// progressReader is the provider's response body as the event reader
// reads it, telling the idle watch (once there is one) of each read.
type progressReader struct {
	r    io.Reader
	idle *idleWatch
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 && p.idle != nil {
		p.idle.progress()
	}
	return n, err
}

// check runs when the timer fires.
func (w *idleWatch) check() {
	if w.stopped.Load() {
		return
	}
	left := w.after
	if s := w.since.Load(); s != 0 {
		left -= time.Since(w.base) - time.Duration(s-1)
		if left <= 0 {
			w.cancel(errStreamIdle)
			return
		}
	}
	w.timer.Reset(left)
}

// stop ends the watch. A check already running may re-arm the timer
// once; that firing finds the watch stopped and does nothing.
func (w *idleWatch) stop() {
	w.stopped.Store(true)
	w.timer.Stop()
}

// streamEndGrace bounds the read of a provider's response past its
// stream's last event, which goes on after the client has its answer:
// providers end the response at once (a chunked body's last chunk, an
// HTTP/2 stream's end), and reading that end keeps the connection for the
// next request. One that holds the response open, or sends more than
// streamEndBytes after the end, is cut off and its connection closed.
var streamEndGrace = time.Second

const streamEndBytes = 4 << 10

// errStreamEndHeld is the cause of an attempt cut off after its stream's
// end (streamEndGrace).
var errStreamEndHeld = errors.New("the provider held its response open after the stream's end")

// drainStreamEnd reads body to its end, within grace (streamEndGrace) and
// streamEndBytes, then closes it and ends the attempt (cancel). It runs on
// a goroutine of its own once the client's response is complete; ctx (the
// router's) ending, as a config unloads, cuts it short.
func drainStreamEnd(ctx context.Context, body io.ReadCloser, cancel context.CancelCauseFunc, grace time.Duration, logger *zap.Logger) {
	cut := time.AfterFunc(grace, func() { cancel(errStreamEndHeld) })
	unload := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	defer func() {
		if v := recover(); v != nil {
			logger.Error("reading the end of a provider's stream", zap.Any("panic", v), zap.Stack("stack"))
		}
		cut.Stop()
		unload()
		cancel(nil)
	}()
	defer body.Close()
	_, _ = io.CopyN(io.Discard, body, streamEndBytes)
}

// relayBatch bounds the events held for one write: a burst larger is
// written in pieces of about this size, and an event larger is written
// alone, not copied.
const relayBatch = 4 << 10

var relayBatches = sync.Pool{New: func() any {
	b := make([]byte, 0, relayBatch)
	return &b
}}

// hold adds ev to the events to write, writing those held first if ev
// would make them more than relayBatch, and ev itself at once if larger.
func (s *streamRelay) hold(w io.Writer, ev []byte) error {
	if s.out != nil && len(*s.out)+len(ev) > relayBatch {
		if err := s.emit(w); err != nil {
			return err
		}
	}
	if len(ev) > relayBatch {
		_, err := w.Write(ev)
		return err
	}
	if s.out == nil {
		s.out = relayBatches.Get().(*[]byte)
	}
	*s.out = append(*s.out, ev...)
	return nil
}

// emit writes the events held (the caller flushes) and gives the buffer
// back.
func (s *streamRelay) emit(w io.Writer) error {
	if s.out == nil {
		return nil
	}
	_, err := w.Write(*s.out)
	s.dropOut()
	return err
}

// dropOut gives back the buffer of held events, written or not.
func (s *streamRelay) dropOut() {
	if s.out != nil {
		*s.out = (*s.out)[:0]
		relayBatches.Put(s.out)
		s.out = nil
	}
}

// forward relays one event: it is held, to be written with the events
// that follow it in the same burst (emit; the caller emits and flushes).
func (s *streamRelay) forward(w io.Writer, ev []byte) error {
	s.events++
	ev = s.scrub.bytes(ev)
	if s.flight != nil && !s.flight.publish(ev) {
		s.flight = nil
	}
	data := openai.EventData(ev)
	if s.wantID {
		if s.responseID = openai.ResponseID(data); s.responseID != "" {
			s.wantID = false
		}
	}
	s.textBytes += openai.StreamTextBytes(s.api, data)
	switch {
	case openai.IsDone(data):
		s.done = true
	case mayBeError(s.api, data) && openai.IsError(data):
		if !s.failed {
			s.requests = openai.RequestsFault(data)
			if s.requests {
				s.requestsErr = bytes.Clone(data) // scrubbed with ev
			}
			s.rateLimited = openai.RateLimited(data)
		}
		s.failed = true
		s.raised = s.raised || openai.SDKsRaise(data)
		// an error event may report what the provider billed (the
		// Responses API's response.failed carries its response's usage)
		s.noteChunkUsage(data)
	default:
		if s.api == openai.Responses && responseEnded(data) {
			s.done = true // and the event has the usage
		}
		if choices := s.noteChunkUsage(data); s.strip && choices == 0 {
			return nil // a usage-only chunk the client did not ask for, with counts or not
		}
	}
	return s.hold(w, ev)
}

// noteUsage keeps a usage report of the stream. Counts only grow along a
// stream (a provider that reports usage in every chunk reports running
// totals), so each count is the largest reported: a smaller report after
// a larger one (a trailing chunk of zeros) lowers nothing that is billed;
// the cached input, a discount, comes with the input it is part of. A
// report of zeros only is a placeholder (some providers put one in each
// chunk until the last), never a bill, as every request has input: it is
// not kept, so that a stream cut before its real usage is estimated. The
// text so far is in a report whose output count grew (or the first): one
// that repeats the count after more text (a placeholder with the prompt's
// count in every chunk, or each chunk's own count) leaves that text to be
// estimated.
func (s *streamRelay) noteUsage(u usage) {
	if u == (usage{}) {
		return
	}
	if !s.found || u.Output > s.usage.Output {
		s.bytesAtUsage = s.textBytes
	}
	if s.found {
		if u.Input < s.usage.Input {
			u.Input, u.CachedInput = s.usage.Input, s.usage.CachedInput
		}
		u.Output = max(u.Output, s.usage.Output)
	}
	s.usage, s.found = u, true
}

// notePartial reads the usage of the last event of a stream that ended
// before the blank line after it (ev, not relayed): a provider's report of
// what it billed is the bill, whether or not the event completed.
func (s *streamRelay) notePartial(ev []byte) {
	if data := openai.EventData(ev); data != nil {
		s.noteChunkUsage(data)
	}
}

// noteChunkUsage keeps the usage an event's data reports, if any
// (noteUsage), and returns its number of choices (openai.ChunkUsage).
func (s *streamRelay) noteChunkUsage(data []byte) (choices int) {
	u, choices, ok := openai.ChunkUsage(data)
	if ok {
		s.noteUsage(u)
	}
	return choices
}

func noFlush() error { return nil }

// mayBeError is a quick test that spares most events IsError's walk: an
// error event has an "error" member or type, or is the Responses API's
// response.failed, and a quote inside text is escaped, so answer text
// never matches. It decides nothing alone: IsError reads the top level.
func mayBeError(api openai.API, data []byte) bool {
	return bytes.Contains(data, quotedError) || (api == openai.Responses && bytes.Contains(data, responseFailed))
}

// responseEnded reports whether a Responses API event ends its response
// (that API's streams have no [DONE]): its type is response.completed or
// response.incomplete (response.failed is an error). The byte search
// spares most events the parse (a type written with escapes, which no
// provider sends, is missed: the stream then counts as cut short); only
// the event's own type decides, not the same words in a client's
// metadata the provider echoes.
func responseEnded(data []byte) bool {
	if !bytes.Contains(data, responseCompleted) && !bytes.Contains(data, responseIncomplete) {
		return false
	}
	switch openai.EventType(data) {
	case "response.completed", "response.incomplete":
		return true
	}
	return false
}

var (
	responseCompleted  = []byte(`"response.completed"`)
	responseIncomplete = []byte(`"response.incomplete"`)
	quotedError        = []byte(`"error"`)
	responseFailed     = []byte(`"response.failed"`)
)

// writeEnvelope ends a committed stream with an error event whose data is
// the error envelope b.
func writeEnvelope(w io.Writer, b []byte) error {
	out := make([]byte, 0, len(b)+8)
	out = append(out, "data: "...)
	out = append(out, b...)
	out = append(out, "\n\n"...)
	_, err := w.Write(out)
	return err
}

// writeStreamError ends a committed stream with an error event in the form
// the official SDKs raise on (a data member "error").
func writeStreamError(w io.Writer, e *routerError) error {
	return writeEnvelope(w, e.envelope())
}
