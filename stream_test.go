package llmrouter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
	"github.com/llmrouter/caddy-llm-router/internal/testkit"
)

// The SSE reader's own tests are in internal/openai (sse_test.go); these
// relay its events the way the handler does.

const (
	relayContent   = `data: {"choices":[{"index":0,"delta":{"content":"hello"}}]}` + "\n\n"
	relayUsageOnly = `data: {"id":"x","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":10,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":64}}}` + "\n\n"
	relayUsageLast = `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2}}` + "\n\n"
	relayDone      = "data: [DONE]\n\n"
	// as a provider written in Python sends it (json.dumps' separators)
	relayUsagePython = `data: {"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}` + "\n\n"
)

var errBoom = errors.New("boom")

// failWriter accepts ok writes, then fails every one after.
type failWriter struct {
	ok     int
	writes int
	buf    bytes.Buffer
}

func (w *failWriter) Write(p []byte) (int, error) {
	if w.writes >= w.ok {
		return 0, errBoom
	}
	w.writes++
	return w.buf.Write(p)
}

// runRelay relays r's stream the way attemptStream does: the first event
// is read before relay is called.
func runRelay(t *testing.T, s *streamRelay, w io.Writer, flush func() error, r io.Reader) error {
	t.Helper()
	events := openai.NewEventReader(r)
	defer events.Release()
	first, err := events.Next()
	if err != nil {
		t.Fatalf("first event: %v", err)
	}
	return s.relay(w, flush, events, first)
}

func TestRelayCleanEnd(t *testing.T) {
	stream := ": ping\n\n" + relayContent + relayContent + relayUsageOnly + relayDone
	for name, r := range map[string]func() io.Reader{
		"whole":         func() io.Reader { return strings.NewReader(stream) },
		"one byte":      func() io.Reader { return iotest.OneByteReader(strings.NewReader(stream)) },
		"DataErrReader": func() io.Reader { return iotest.DataErrReader(strings.NewReader(stream)) },
	} {
		var out bytes.Buffer
		s := streamRelay{api: openai.Chat}
		if err := runRelay(t, &s, &out, noFlush, r()); err != nil {
			t.Errorf("%s: relay = %v, want nil", name, err)
		}
		if out.String() != stream {
			t.Errorf("%s: relayed %q, want %q", name, out.String(), stream)
		}
		if !s.done || !s.found || s.usage != (usage{Input: 120, Output: 10, CachedInput: 64}) || s.textBytes != 10 {
			t.Errorf("%s: done %v usage %+v text bytes %d", name, s.done, s.usage, s.textBytes)
		}
	}
}

// TestRelayCountsText: the characters of text streamed are counted for
// each API's text member, whatever the spacing, to estimate the output of
// a stream that ends without usage.
// TestRelayUsageNeverShrinks: a provider that reports usage more than
// once reports running totals; a smaller report after a larger one (a
// trailing chunk of zeros) lowers no count.
func TestRelayUsageNeverShrinks(t *testing.T) {
	zeros := `data: {"id":"x","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}` + "\n\n"
	running := `data: {"choices":[{"index":0,"delta":{"content":"hello"}}],"usage":{"prompt_tokens":120,"completion_tokens":1}}` + "\n\n"
	for name, c := range map[string]struct {
		stream string
		want   usage
	}{
		"zeros after the usage": {relayContent + relayUsageOnly + zeros + relayDone, usage{Input: 120, Output: 10, CachedInput: 64}},
		"running totals":        {running + running + relayUsageOnly + relayDone, usage{Input: 120, Output: 10, CachedInput: 64}},
		"zeros first":           {zeros + relayContent + relayUsageLast + relayDone, usage{Input: 7, Output: 2}},
		// a discount is not taken from a report whose input is not the one billed
		"cached input alone after": {relayUsageLast + `data: {"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0,"prompt_tokens_details":{"cached_tokens":7}}}` + "\n\n" + relayDone, usage{Input: 7, Output: 2}},
	} {
		s := streamRelay{api: openai.Chat}
		if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(c.stream)); err != nil || !s.found || s.usage != c.want {
			t.Errorf("%s: relay %v, usage %+v (found %v), want %+v", name, err, s.usage, s.found, c.want)
		}
	}
}

// TestRelayZeroUsageIsNoUsage: a report of zeros only (a provider's
// placeholder before its last chunk) is not a usage: a stream that has
// nothing else is estimated, as one without usage.
func TestRelayZeroUsageIsNoUsage(t *testing.T) {
	zeros := `data: {"choices":[{"index":0,"delta":{"content":"hello"}}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}` + "\n\n"
	s := streamRelay{api: openai.Chat}
	if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(zeros+zeros)); err != nil {
		t.Fatal(err)
	}
	if s.found || s.textBytes != 10 {
		t.Errorf("usage %+v (found %v), %d bytes of text; want no usage and 10", s.usage, s.found, s.textBytes)
	}
}

func TestRelayCountsText(t *testing.T) {
	cases := []struct {
		api    openai.API
		stream string
		want   int64
	}{
		{openai.Chat, relayContent + relayContent + relayDone, 10},
		{openai.Chat, `data: {"choices": [{"index": 0, "delta": {"content": "h\u00e9llo"}}]}` + "\n\n" + relayDone, 6}, // é is 2 bytes
		{openai.Completions, `data: {"choices": [{"text": "abc", "index": 0}]}` + "\n\n" + relayDone, 3},
		{openai.Responses, `data: {"type":"response.output_text.delta","delta":"abcd"}` + "\n\n" + relayDone, 4},
		{openai.Responses, relayContent + relayDone, 0},
		{0, relayContent + relayDone, 0},
	}
	for _, tc := range cases {
		s := streamRelay{api: tc.api}
		if err := runRelay(t, &s, io.Discard, noFlush, strings.NewReader(tc.stream)); err != nil {
			t.Fatal(err)
		}
		if s.textBytes != tc.want || s.found || !s.done {
			t.Errorf("api %d, %q: %d bytes of text (usage %v, done %v), want %d", tc.api, tc.stream, s.textBytes, s.usage, s.done, tc.want)
		}
	}
}

func TestRelayStripsUsageChunk(t *testing.T) {
	cases := []struct {
		name   string
		stream string
		strip  bool
		want   string
		usage  usage
	}{
		{"strip usage-only chunk", relayContent + relayUsageOnly + relayDone, true, relayContent + relayDone, usage{Input: 120, Output: 10, CachedInput: 64}},
		{"keep usage-only chunk", relayContent + relayUsageOnly + relayDone, false, relayContent + relayUsageOnly + relayDone, usage{Input: 120, Output: 10, CachedInput: 64}},
		{"usage-only chunk first, stripped", relayUsageOnly + relayDone, true, relayDone, usage{Input: 120, Output: 10, CachedInput: 64}},
		{"usage on a content chunk is never stripped", relayContent + relayUsageLast + relayDone, true, relayContent + relayUsageLast + relayDone, usage{Input: 7, Output: 2}},
		{"python-style usage-only chunk, stripped", relayContent + relayUsagePython + relayDone, true, relayContent + relayDone, usage{Input: 7, Output: 2}},
		{"python-style usage-only chunk, kept", relayContent + relayUsagePython + relayDone, false, relayContent + relayUsagePython + relayDone, usage{Input: 7, Output: 2}},
		{"usage:null chunk is kept", `data: {"choices":[],"usage":null}` + "\n\n" + relayDone, true, `data: {"choices":[],"usage":null}` + "\n\n" + relayDone, usage{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			s := streamRelay{strip: tc.strip}
			if err := runRelay(t, &s, &out, noFlush, strings.NewReader(tc.stream)); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("relayed %q, want %q", out.String(), tc.want)
			}
			if got := s.usage; got != tc.usage || s.found != (tc.usage != usage{}) {
				t.Errorf("usage %+v (found %v), want %+v", got, s.found, tc.usage)
			}
		})
	}
}

func TestRelayDownstreamWriteFails(t *testing.T) {
	// one event a read: 4 events, the usage-only one stripped, 3 writes
	stream := []string{relayContent, relayContent, relayUsageOnly, relayDone}
	for ok := range 3 {
		w := &failWriter{ok: ok}
		s := streamRelay{strip: true}
		err := runRelay(t, &s, w, noFlush, testkit.NewChunkReader(stream...))
		if !errors.Is(err, errWritingDownstream) || !errors.Is(err, errBoom) {
			t.Errorf("writer failing after %d writes: relay = %v, want errWritingDownstream wrapping errBoom", ok, err)
		}
		if w.writes != ok {
			t.Errorf("writer failing after %d writes: %d writes", ok, w.writes)
		}
	}
	// a burst: the first event alone, the rest in one write
	w := &failWriter{ok: 1}
	if err := runRelay(t, &streamRelay{strip: true}, w, noFlush, strings.NewReader(strings.Join(stream, ""))); !errors.Is(err, errBoom) {
		t.Errorf("a burst to a writer failing after 1 write: relay = %v, want errBoom", err)
	}
	w = &failWriter{ok: 2}
	if err := runRelay(t, &streamRelay{strip: true}, w, noFlush, strings.NewReader(strings.Join(stream, ""))); err != nil || w.writes != 2 {
		t.Errorf("a burst: relay = %v after %d writes, want nil after 2", err, w.writes)
	}
	// a failing flush is the client's side too
	flushes := 0
	err := runRelay(t, &streamRelay{}, io.Discard, func() error {
		flushes++
		if flushes == 2 {
			return errBoom
		}
		return nil
	}, testkit.NewChunkReader(relayContent, relayContent, relayDone))
	if !errors.Is(err, errWritingDownstream) || !errors.Is(err, errBoom) || flushes != 2 {
		t.Errorf("failing flush: relay = %v after %d flushes", err, flushes)
	}
}

func TestRelayUpstreamError(t *testing.T) {
	defer func(old int) { openai.MaxEventSize = old }(openai.MaxEventSize)
	openai.MaxEventSize = 4 << 20 // quick to pass
	errUpstream := errors.New("connection reset by peer")
	cases := []struct {
		name string
		r    io.Reader
		want error // nil: any error but errWritingDownstream
		out  string
	}{
		{"read error after events", io.MultiReader(strings.NewReader(relayContent+relayContent), iotest.ErrReader(errUpstream)), errUpstream, relayContent + relayContent},
		{"read error mid-event", io.MultiReader(strings.NewReader(relayContent+"data: {\"cho"), iotest.ErrReader(errUpstream)), errUpstream, relayContent},
		{"cut mid-event", strings.NewReader(relayContent + "data: {\"cho"), io.ErrUnexpectedEOF, relayContent},
		{"event too large", strings.NewReader(relayContent + "data: " + strings.Repeat("z", openai.MaxEventSize) + "\n\n"), nil, relayContent},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runRelay(t, &streamRelay{}, &out, noFlush, tc.r)
			if err == nil || errors.Is(err, errWritingDownstream) {
				t.Fatalf("relay = %v, want the upstream's error", err)
			}
			if tc.want != nil && err != tc.want {
				t.Errorf("relay = %v (%T), want %v returned as is", err, err, tc.want)
			}
			if out.String() != tc.out {
				t.Errorf("relayed %q, want %q", out.String(), tc.out)
			}
		})
	}
}

// TestRelayFlushes: the first event is flushed at once, every other as
// soon as no other complete event is waiting; the stream's last event (and
// what came with it) is left to the end of the response, which relay
// reaches at once, with or without an idle timer.
func TestRelayFlushes(t *testing.T) {
	cases := []struct {
		name    string
		chunks  []string
		flushes []int // bytes written at each flush
	}{
		{"one event per read", []string{relayContent, relayContent, relayContent, relayDone}, []int{61, 122, 183}},
		{"burst", []string{relayContent + relayContent + relayContent + relayDone}, []int{61}},
		{"pairs", []string{relayContent + relayContent, relayContent + relayDone}, []int{61, 122}},
		{"first alone", []string{relayContent, relayContent + relayContent + relayDone}, []int{61}},
	}
	for _, tc := range cases {
		for _, idle := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/idle timer %v", tc.name, idle), func(t *testing.T) {
				var out bytes.Buffer
				var flushed []int
				s := &streamRelay{}
				if idle {
					s.idle = newIdleWatch(time.Minute, func(error) {})
					defer s.idle.stop()
				}
				err := runRelay(t, s, &out, func() error {
					flushed = append(flushed, out.Len())
					return nil
				}, testkit.NewChunkReader(tc.chunks...))
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(flushed, tc.flushes) {
					t.Errorf("flushes at %v of %d bytes, want %v", flushed, out.Len(), tc.flushes)
				}
				if out.String() != strings.Join(tc.chunks, "") || !s.done {
					t.Errorf("relayed %q, done %v", out.String(), s.done)
				}
			})
		}
	}
}

// TestRelayStopsAtTheLastEvent: relay returns at the stream's last event
// without reading on: what follows [DONE] (here a read that fails the
// test) is not the client's wait.
func TestRelayStopsAtTheLastEvent(t *testing.T) {
	for _, api := range []openai.API{openai.Chat, openai.Responses} {
		stream := relayContent + relayDone
		if api == openai.Responses {
			stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":2,\"total_tokens\":5}}}\n\n"
		}
		var out bytes.Buffer
		s := &streamRelay{api: api}
		var after pastTheEnd
		if err := runRelay(t, s, &out, noFlush, io.MultiReader(strings.NewReader(stream), &after)); err != nil {
			t.Fatalf("%v: %v", api, err)
		}
		if !s.done || out.String() != stream || after.read {
			t.Errorf("%v: done %v, relayed %q, read past the end %v", api, s.done, out.String(), after.read)
		}
	}
}

// pastTheEnd is what a provider sends after its stream's end: a relay that
// reads it waits on the provider for nothing.
type pastTheEnd struct{ read bool }

func (p *pastTheEnd) Read([]byte) (int, error) {
	p.read = true
	return 0, io.EOF
}

// TestRelayPreservesEventBoundaries: what reaches the client is the
// upstream's stream byte for byte (stray blank lines aside), whatever the
// length of its lines.
func TestRelayPreservesEventBoundaries(t *testing.T) {
	long := func(n int) string {
		return `data: {"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("w", n-len(`data: {"choices":[{"index":0,"delta":{"content":""}}]}`)) + `"}}]}`
	}
	cases := []struct {
		name   string
		stream string
		skip   string
	}{
		{"short lines", relayContent + relayContent + relayDone, ""},
		{"3000-byte line", long(3000) + "\n\n" + relayContent + relayDone, ""},
		{"2047-byte line", long(2047) + "\n\n" + relayContent + relayDone, ""},
		{
			"2048-byte line", long(2048) + "\n\n" + relayContent + relayDone,
			"",
		},
		{
			"4096-byte line", long(4096) + "\n\n" + relayContent + relayDone,
			"",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			var out bytes.Buffer
			if err := runRelay(t, &streamRelay{}, &out, noFlush, strings.NewReader(tc.stream)); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.stream {
				t.Errorf("relayed %s, want %s", testkit.Short(strings.SplitAfter(out.String(), "\n")), testkit.Short(strings.SplitAfter(tc.stream, "\n")))
			}
		})
	}
}

// writeSizes records the size of each write.
type writeSizes struct {
	bytes.Buffer
	sizes []int
}

func (w *writeSizes) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	return w.Buffer.Write(p)
}

// TestRelayWritesInBatches: the events of a burst are written together,
// in writes of at most relayBatch bytes, and an event larger than that
// alone; the client gets the stream byte for byte.
func TestRelayWritesInBatches(t *testing.T) {
	big := `data: {"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("w", 10<<10) + `"}}]}` + "\n\n"
	stream := relayContent + strings.Repeat(relayContent, 100) + big + relayContent + relayDone
	var out writeSizes
	if err := runRelay(t, &streamRelay{}, &out, noFlush, strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if out.String() != stream {
		t.Fatalf("relayed %d bytes, not the stream's %d", out.Len(), len(stream))
	}
	// the first event alone, then a write where the reader's buffer or
	// the batch ends (a few for 103 events), the large event alone, and
	// the last two together
	alone := 0
	for _, n := range out.sizes {
		if n == len(big) {
			alone++
		} else if n > relayBatch {
			t.Errorf("a write of %d bytes, over relayBatch", n)
		}
	}
	last := len(out.sizes) - 1
	if alone != 1 || len(out.sizes) > 10 || out.sizes[0] != len(relayContent) || out.sizes[last] != len(relayContent+relayDone) {
		t.Errorf("writes of %v bytes, want the first event, a few of short events, the large one (%d) alone, the last two", out.sizes, len(big))
	}
}

// slowWriter is a client that takes its time to read each write.
type slowWriter struct {
	delay time.Duration
	buf   bytes.Buffer
}

func (w *slowWriter) Write(p []byte) (int, error) {
	<-time.After(w.delay) // the client's slowness, not a synchronisation
	return w.buf.Write(p)
}

// TestRelayIdleTimerIsTheProvidersOnly: the idle timer runs while the
// relay waits for the provider, not while it writes to a slow client.
func TestRelayIdleTimerIsTheProvidersOnly(t *testing.T) {
	var fired atomic.Bool
	s := streamRelay{idle: newIdleWatch(20*time.Millisecond, func(error) { fired.Store(true) })}
	defer s.idle.stop()
	w := &slowWriter{delay: 60 * time.Millisecond}
	stream := relayContent + relayContent + relayUsageOnly + relayDone
	if err := runRelay(t, &s, w, noFlush, strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if fired.Load() {
		t.Error("the idle timer fired while the relay was writing to a slow client")
	}
	if w.buf.String() != stream {
		t.Errorf("relayed %q", w.buf.String())
	}
}

// TestIdleWatch: the watch cancels once a single wait has lasted its
// duration, never sooner (a wait that starts late in the timer's period
// gets its whole duration), and never while the relay is not waiting, for
// however long.
func TestIdleWatch(t *testing.T) {
	t.Run("a wait that lasts", func(t *testing.T) {
		const after = 60 * time.Millisecond
		fired := make(chan time.Time, 1)
		w := newIdleWatch(after, func(cause error) {
			if cause != errStreamIdle {
				t.Errorf("cause %v", cause)
			}
			fired <- time.Now()
		})
		defer w.stop()
		time.Sleep(after / 2) // not waiting: the timer's period is half gone
		start := time.Now()
		w.waiting(true)
		select {
		case at := <-fired:
			if d := at.Sub(start); d < after {
				t.Errorf("canceled %v into the wait, before %v", d, after)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a wait of 5 s was never canceled")
		}
	})
	t.Run("short waits", func(t *testing.T) {
		const after = 200 * time.Millisecond
		var fired atomic.Bool
		w := newIdleWatch(after, func(error) { fired.Store(true) })
		defer w.stop()
		deadline := time.Now().Add(3 * after)
		for time.Now().Before(deadline) {
			w.waiting(true)
			w.waiting(false)
			time.Sleep(after / 4) // writing to a slow client
		}
		if fired.Load() {
			t.Error("canceled with no wait as long as its duration")
		}
	})
	t.Run("stopped", func(t *testing.T) {
		var fired atomic.Bool
		w := newIdleWatch(10*time.Millisecond, func(error) { fired.Store(true) })
		w.waiting(true)
		w.stop()
		time.Sleep(50 * time.Millisecond)
		if fired.Load() {
			t.Error("canceled after stop")
		}
	})
}
