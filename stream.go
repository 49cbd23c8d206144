package llmrouter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// errFirstByteTimeout is the cause of an attempt canceled because its
// stream sent no event within first_byte_timeout.
var errFirstByteTimeout = errors.New("first byte timeout")

// maxEventSize bounds one SSE event, so a provider that never ends a line
// cannot make the router buffer without limit.
const maxEventSize = 4 << 20

// attemptStream handles a streaming request. The response is held until
// the first SSE event arrives, so a stream that fails or stalls before its
// first token still fails over; after that, events are relayed one by one
// and a broken upstream ends the client's stream.
func (ex *exchange) attemptStream(d *deployment, res *attemptResult) {
	ctx, cancel := context.WithCancelCause(ex.req.Context())
	defer cancel(nil)
	timer := time.AfterFunc(time.Duration(ex.router.Failover.FirstByteTimeout), func() {
		cancel(errFirstByteTimeout)
	})
	defer timer.Stop()

	resp, err := d.provider.transport.RoundTrip(ex.upstreamRequest(ctx, d))
	if err != nil {
		ex.transportFailure(ctx, res, err)
		return
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode >= 300 || !isEventStream(resp.Header.Get("Content-Type")) {
		// an error, or a provider that answered a stream request with
		// plain JSON: handled like a buffered response
		ex.answerBuffered(ctx, d, resp, res)
		return
	}

	events := newSSEReader(resp.Body)
	defer events.release()
	relay := streamRelay{strip: ex.body.stripUsage()}
	// hold the response until the first event with data
	var first []byte
	for first == nil {
		ev, err := events.next()
		if err != nil {
			ex.transportFailure(ctx, res, orEOF(err))
			return
		}
		if eventData(ev) != nil { // comments such as keep-alives are not the first event
			first = ev
		}
	}
	if !timer.Stop() {
		// the timer fired as the first event arrived: the attempt's
		// context is canceled, so this stream cannot be relayed
		ex.transportFailure(ctx, res, errFirstByteTimeout)
		return
	}
	res.outcome = outcomeSuccess
	res.status = resp.StatusCode
	res.firstByte = now().Sub(res.started)
	res.committed = true
	d.metrics.ttft.Observe(now().Sub(ex.start).Seconds())

	ex.commitHeaders(d, resp.Header)
	rc := http.NewResponseController(ex.w)
	ex.w.WriteHeader(resp.StatusCode)

	// Each event is flushed as soon as no further complete event is
	// already waiting: event by event for a live stream, one write for a
	// burst that arrived together.
	err = relay.forward(ex.w, first)
	if err == nil {
		err = rc.Flush()
	}
	for err == nil {
		var ev []byte
		if ev, err = events.next(); err != nil {
			break
		}
		if err = relay.forward(ex.w, ev); err == nil && !events.ready() {
			err = rc.Flush()
		}
	}
	if relay.usage != nil {
		ex.observeUsage(d, *relay.usage)
	} else {
		// abandoned, broken, or a provider that ignores include_usage:
		// the provider bills anyway, so count an estimate (~4 characters
		// a token) rather than nothing
		ex.observeUsage(d, usage{
			input:     int64(len(ex.body.raw)+3) / 4,
			output:    (relay.chars + 3) / 4,
			estimated: true,
		})
	}
	switch {
	case errors.Is(err, io.EOF) || relay.done:
		// the provider ended the stream
	case ex.req.Context().Err() != nil:
		res.outcome, res.detail = outcomeCanceled, "client went away mid-stream"
	default:
		// the stream broke after the response was committed: the client's
		// stream ends here; nothing else can be sent in its place
		res.outcome, res.detail = outcomeConnectError, "stream broke: "+unwrapURLError(err).Error()
	}
}

// orEOF turns a clean end before the first event into an error that says
// so.
func orEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("stream ended before its first event")
	}
	return err
}

// streamRelay writes events to the client, pulling the usage out on the way.
type streamRelay struct {
	strip bool // the client did not ask for usage: drop the usage-only chunk
	usage *usage
	done  bool  // saw [DONE]
	chars int64 // characters of content streamed, to estimate usage
}

var (
	usagePrefix = []byte(`"usage":{`)
	doneData    = []byte("[DONE]")
	contentKey  = []byte(`"content":"`)
)

// forward relays one event (the caller flushes).
func (s *streamRelay) forward(w io.Writer, ev []byte) error {
	data := eventData(ev)
	if i := bytes.Index(data, contentKey); i >= 0 {
		s.chars += jsonStringChars(data[i+len(contentKey):])
	}
	if bytes.Equal(data, doneData) {
		s.done = true
	} else if bytes.Contains(data, usagePrefix) {
		if u, choices, ok := usageFromChunk(data); ok {
			s.usage = &u
			if s.strip && choices == 0 {
				return nil
			}
		}
	}
	_, err := w.Write(ev)
	return err
}

// sseReader splits a text/event-stream into events, each returned with its
// terminating blank line, in a buffer reused by the next call.
type sseReader struct {
	r   *bufio.Reader
	buf []byte
}

// Small, pooled buffers: thousands of streams stay open at once, and a line
// longer than the reader's buffer is still read whole (in pieces).
var sseReaders = sync.Pool{New: func() any {
	return &sseReader{r: bufio.NewReaderSize(nil, 2<<10), buf: make([]byte, 0, 1<<10)}
}}

func newSSEReader(r io.Reader) *sseReader {
	s := sseReaders.Get().(*sseReader)
	s.r.Reset(r)
	return s
}

// release returns the reader to the pool; it must not be used after.
func (s *sseReader) release() {
	s.r.Reset(nil)
	if cap(s.buf) <= 64<<10 { // don't keep a buffer grown by a huge event
		s.buf = s.buf[:0]
		sseReaders.Put(s)
	}
}

var (
	eventEnd     = []byte("\n\n")
	eventEndCRLF = []byte("\r\n\r\n")
)

// ready reports whether a complete event is already buffered, so next
// will not wait for the network.
func (s *sseReader) ready() bool {
	n := s.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.r.Peek(n)
	return bytes.Contains(b, eventEnd) || bytes.Contains(b, eventEndCRLF)
}

// next returns the next event. At a clean end of the stream it returns
// io.EOF; a partial event at the end is dropped, since it never completed.
func (s *sseReader) next() ([]byte, error) {
	s.buf = s.buf[:0]
	for {
		line, err := s.r.ReadSlice('\n')
		if len(s.buf)+len(line) > maxEventSize {
			return nil, errors.New("stream event larger than 4 MiB")
		}
		s.buf = append(s.buf, line...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(s.buf) > 0:
			return nil, io.ErrUnexpectedEOF
		case err != nil:
			return nil, err
		}
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			if len(s.buf) == len(line) {
				s.buf = s.buf[:0] // a stray blank line, not an event
				continue
			}
			return s.buf, nil
		}
	}
}

// eventData is the value of an event's data field, for the single-line
// data events OpenAI-compatible providers send; nil if it has none.
func eventData(ev []byte) []byte {
	for len(ev) > 0 {
		i := bytes.IndexByte(ev, '\n')
		line := ev
		if i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		if rest, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			rest = bytes.TrimSuffix(rest, []byte("\r"))
			return bytes.TrimPrefix(rest, []byte(" "))
		}
	}
	return nil
}

// jsonStringChars counts the characters of a JSON string's content up to
// its closing quote (an escape counts as one character).
func jsonStringChars(b []byte) int64 {
	var n int64
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return n
		case c == '\\':
			i++
			n++
		case c&0xC0 != 0x80: // not a UTF-8 continuation byte
			n++
		}
	}
	return n
}

// isEventStream reports whether a Content-Type is text/event-stream
// (parameters allowed), without parsing it in full.
func isEventStream(ct string) bool {
	const mt = "text/event-stream"
	if len(ct) < len(mt) || !strings.EqualFold(ct[:len(mt)], mt) {
		return false
	}
	rest := strings.TrimLeft(ct[len(mt):], " \t")
	return rest == "" || rest[0] == ';'
}
