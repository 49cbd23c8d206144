package openai

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/llmrouter/caddy-llm-router/internal/testkit"
)

// byteReader returns one byte per Read, with io.EOF on a Read of its own.
type byteReader struct{ s string }

func (r *byteReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}

// readEvents reads events until an error, copying each (the reader reuses
// its buffer), and returns them with the error that ended the stream.
func readEvents(r io.Reader) ([]string, error) {
	events := NewEventReader(r)
	defer events.Release()
	var out []string
	for {
		ev, err := events.Next()
		if err != nil {
			if ev != nil {
				return out, fmt.Errorf("next returned %q with error %w", ev, err)
			}
			return out, err
		}
		out = append(out, string(ev))
	}
}

// line2K is a data line whose length without its newline is exactly the
// SSE reader's 2 KiB buffer.
var line2K = "data: " + strings.Repeat("x", 2<<10-len("data: "))

var sseCases = []struct {
	name string
	in   string
	want []string
	err  error // the error that ends the stream
	skip string
}{
	{name: "empty", in: "", err: io.EOF},
	{name: "only blank lines", in: "\n\r\n\n", err: io.EOF},
	{name: "one event", in: "data: a\n\n", want: []string{"data: a\n\n"}, err: io.EOF},
	{name: "two events", in: "data: a\n\ndata: {\"b\":1}\n\n", want: []string{"data: a\n\n", "data: {\"b\":1}\n\n"}, err: io.EOF},
	{name: "CRLF", in: "data: a\r\n\r\ndata: b\r\n\r\n", want: []string{"data: a\r\n\r\n", "data: b\r\n\r\n"}, err: io.EOF},
	{name: "CRLF line, LF blank line", in: "data: a\r\n\n", want: []string{"data: a\r\n\n"}, err: io.EOF},
	{name: "comment", in: ": keep-alive\n\ndata: x\n\n", want: []string{": keep-alive\n\n", "data: x\n\n"}, err: io.EOF},
	{name: "event line first", in: "event: message\ndata: x\n\n", want: []string{"event: message\ndata: x\n\n"}, err: io.EOF},
	{name: "multi-line event", in: "id: 7\nevent: delta\ndata: a\ndata: b\n: note\n\n", want: []string{"id: 7\nevent: delta\ndata: a\ndata: b\n: note\n\n"}, err: io.EOF},
	{name: "stray blank line first", in: "\ndata: a\n\n", want: []string{"data: a\n\n"}, err: io.EOF},
	{name: "stray CRLF blank lines first", in: "\r\n\r\ndata: a\r\n\r\n", want: []string{"data: a\r\n\r\n"}, err: io.EOF},
	{name: "extra blank lines between events", in: "data: a\n\n\n\ndata: b\n\n\n", want: []string{"data: a\n\n", "data: b\n\n"}, err: io.EOF},
	{name: "data with colons and spaces", in: "data:  a: b \n\n", want: []string{"data:  a: b \n\n"}, err: io.EOF},
	{name: "no trailing newline", in: "data: a\n\ndata: b", want: []string{"data: a\n\n"}, err: io.ErrUnexpectedEOF},
	{name: "no trailing blank line", in: "data: a\n\ndata: b\n", want: []string{"data: a\n\n"}, err: io.ErrUnexpectedEOF},
	{name: "partial only", in: "data: {\"choices\":", err: io.ErrUnexpectedEOF},
	// a lone CR ends a line too (the SSE spec: CR, LF or CR LF)
	{name: "trailing bare CR", in: "data: a\n\ndata: b\n\r", want: []string{"data: a\n\n", "data: b\n\r"}, err: io.EOF},
	{name: "CR", in: "data: a\r\rdata: b\r\r", want: []string{"data: a\r\r", "data: b\r\r"}, err: io.EOF},
	{name: "CR, two data lines", in: "event: e\rdata: a\rdata: b\r\r", want: []string{"event: e\rdata: a\rdata: b\r\r"}, err: io.EOF},
	{name: "CR lines, CRLF blank line", in: "data: a\rdata: b\r\r\ndata: c\r\r", want: []string{"data: a\rdata: b\r\r", "data: c\r\r"}, err: io.EOF},
	{name: "stray CRs first", in: "\r\r\n\rdata: a\r\r", want: []string{"data: a\r\r"}, err: io.EOF},
	{name: "LF line, CR blank line", in: "data: a\n\rdata: b\n\n", want: []string{"data: a\n\r", "data: b\n\n"}, err: io.EOF},
	{name: "LF line, CRLF blank line", in: "data: a\n\r\ndata: b\n\n", want: []string{"data: a\n\r\n", "data: b\n\n"}, err: io.EOF},
	{name: "CRLF line, CR blank line", in: "data: a\r\n\rdata: b\r\n\r\n", want: []string{"data: a\r\n\r", "data: b\r\n\r\n"}, err: io.EOF},
	{name: "mixed endings", in: "id: 1\rdata: a\r\ndata: b\n\r\ndata: c\r\r", want: []string{"id: 1\rdata: a\r\ndata: b\n\r\n", "data: c\r\r"}, err: io.EOF},
	{name: "CR line at the end", in: "data: a\r\rdata: b\r", want: []string{"data: a\r\r"}, err: io.ErrUnexpectedEOF},
	{name: "CR LF line at the end", in: "data: b\r\n", err: io.ErrUnexpectedEOF},
	{name: "line longer than the buffer", in: "data: " + strings.Repeat("y", 5000) + "\n\n", want: []string{"data: " + strings.Repeat("y", 5000) + "\n\n"}, err: io.EOF},
	{name: "line one byte short of the buffer", in: line2K[1:] + "\n\ndata: z\n\n", want: []string{line2K[1:] + "\n\n", "data: z\n\n"}, err: io.EOF},
	{
		name: "line exactly the buffer size", in: line2K + "\n\ndata: z\n\n", want: []string{line2K + "\n\n", "data: z\n\n"}, err: io.EOF,
	},
	{
		name: "CRLF line exactly the buffer size", in: line2K + "\r\n\r\n", want: []string{line2K + "\r\n\r\n"}, err: io.EOF,
	},
	{
		name: "CRLF line one byte short of the buffer", in: line2K[1:] + "\r\n\r\n", want: []string{line2K[1:] + "\r\n\r\n"}, err: io.EOF,
	},
}

// TestSSEReaderSplits reads every case whole, one byte per Read (twice),
// in halves, with the data and io.EOF together, and split in two at every
// byte boundary: the events and the final error never change.
func TestSSEReaderSplits(t *testing.T) {
	for _, tc := range sseCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			readers := map[string]func() io.Reader{
				"whole":            func() io.Reader { return strings.NewReader(tc.in) },
				"byteReader":       func() io.Reader { return &byteReader{tc.in} },
				"OneByteReader":    func() io.Reader { return iotest.OneByteReader(strings.NewReader(tc.in)) },
				"HalfReader":       func() io.Reader { return iotest.HalfReader(strings.NewReader(tc.in)) },
				"DataErrReader":    func() io.Reader { return iotest.DataErrReader(strings.NewReader(tc.in)) },
				"DataErrOneByte":   func() io.Reader { return iotest.DataErrReader(iotest.OneByteReader(strings.NewReader(tc.in))) },
				"ChunkReader":      func() io.Reader { return testkit.NewChunkReader(tc.in) },
				"HalfReaderChunks": func() io.Reader { return iotest.HalfReader(testkit.NewChunkReader(tc.in)) },
			}
			for i := 0; i <= len(tc.in) && len(tc.in) <= 64; i++ {
				readers[fmt.Sprintf("split@%d", i)] = func() io.Reader {
					return testkit.NewChunkReader(tc.in[:i], tc.in[i:])
				}
			}
			for name, r := range readers {
				got, err := readEvents(r())
				if !equalStrings(got, tc.want) || err != tc.err {
					t.Errorf("%s: got %s, %v; want %s, %v", name, testkit.Short(got), err, testkit.Short(tc.want), tc.err)
				}
			}
		})
	}
}

// TestSSEReaderEverySplit cuts a stream of every kind of event into
// two-byte-boundary pieces at every pair of positions.
func TestSSEReaderEverySplit(t *testing.T) {
	in := "\n: ping\r\n\r\nevent: e\ndata: {\"a\":1}\n\ndata: b\r\ndata: c\r\n\r\n\n"
	want := []string{": ping\r\n\r\n", "event: e\ndata: {\"a\":1}\n\n", "data: b\r\ndata: c\r\n\r\n"}
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			got, err := readEvents(testkit.NewChunkReader(in[:i], in[i:j], in[j:]))
			if !equalStrings(got, want) || err != io.EOF {
				t.Fatalf("split at %d,%d: got %q, %v", i, j, got, err)
			}
		}
	}
}

// smallEvents lowers MaxEventSize to 4 MiB for the test, so that events
// over it are quick to make.
func smallEvents(t *testing.T) {
	old := MaxEventSize
	MaxEventSize = 4 << 20
	t.Cleanup(func() { MaxEventSize = old })
}

func TestSSEReaderEventSize(t *testing.T) {
	smallEvents(t)
	mb := "data: " + strings.Repeat("m", 1<<20) + "\n\n"
	limit := "data: " + strings.Repeat("l", MaxEventSize-len("data: \n\n")) + "\n\n"
	cases := []struct {
		name string
		r    func() io.Reader
		want []string
		ok   bool // false: an error other than io.EOF ends the stream
	}{
		{"1 MB", func() io.Reader { return strings.NewReader(mb + "data: next\n\n") }, []string{mb, "data: next\n\n"}, true},
		{"1 MB one byte per Read", func() io.Reader { return iotest.OneByteReader(strings.NewReader(mb)) }, []string{mb}, true},
		{"1 MB in halves", func() io.Reader { return iotest.HalfReader(strings.NewReader(mb)) }, []string{mb}, true},
		{"exactly the limit", func() io.Reader { return strings.NewReader(limit) }, []string{limit}, true},
		{"one byte over the limit", func() io.Reader { return strings.NewReader("x" + limit) }, nil, false},
		{"over 4 MiB in one line", func() io.Reader {
			return strings.NewReader("data: " + strings.Repeat("o", 5<<20) + "\n\n")
		}, nil, false},
		{"over 4 MiB in many lines", func() io.Reader {
			return strings.NewReader(strings.Repeat("data: "+strings.Repeat("p", 1000)+"\n", 5000) + "\n")
		}, nil, false},
		{"over 4 MiB after a good event", func() io.Reader {
			return strings.NewReader("data: a\n\ndata: " + strings.Repeat("q", 4<<20) + "\n\n")
		}, []string{"data: a\n\n"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readEvents(tc.r())
			if !equalStrings(got, tc.want) {
				t.Errorf("got %d events (first %.40q), want %d", len(got), firstOf(got), len(tc.want))
			}
			switch {
			case tc.ok && err != io.EOF:
				t.Errorf("ended with %v, want io.EOF", err)
			case !tc.ok && err != ErrEventTooLarge:
				t.Errorf("ended with %v, want ErrEventTooLarge", err)
			}
		})
	}
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSSEReaderReady: Ready is true only when a whole event is already
// buffered, so Next will return without reading.
func TestSSEReaderReady(t *testing.T) {
	cases := []struct {
		name   string
		chunks []string
		want   []bool // Ready() after each successful Next()
		skip   string
	}{
		{"burst", []string{"data: a\n\ndata: b\n\ndata: c\n\n"}, []bool{true, true, false}, ""},
		{"one event per read", []string{"data: a\n\n", "data: b\n\n"}, []bool{false, false}, ""},
		{"partial next event", []string{"data: a\n\ndata: b\n", "\n"}, []bool{false, false}, ""},
		{"partial next event missing its CR LF", []string{"data: a\r\n\r\ndata: b\r\n", "\r\n"}, []bool{false, false}, ""},
		{"CRLF burst", []string{"data: a\r\n\r\ndata: b\r\n\r\n"}, []bool{true, false}, ""},
		{"comment buffered", []string{"data: a\n\n: keep-alive\n\n"}, []bool{true, false}, ""},
		{"CR burst", []string{"data: a\r\rdata: b\r\r"}, []bool{true, false}, ""},
		// a CR blank line after an LF or CR LF line may be the start of
		// CR LF: Next waits for the byte after it
		{"CR blank line last", []string{"data: a\n\ndata: b\n\r", "\ndata: c\n\n"}, []bool{false, true, false}, ""},
		{"CR line last", []string{"data: a\n\ndata: b\r", "\r"}, []bool{false, false}, ""},
		{"CR LF blank line split", []string{"data: a\r\n\r\ndata: b\r\n\r", "\n"}, []bool{false, false}, ""},
		{"CR lines", []string{"data: a\r\rdata: b\rdata: c\r\r"}, []bool{true, false}, ""},
		{
			"stray blank lines then a partial event", []string{"data: a\n\n\n\ndata: b", "\n\n"}, []bool{false, false},
			"",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			events := NewEventReader(testkit.NewChunkReader(tc.chunks...))
			defer events.Release()
			if events.Ready() {
				t.Error("ready before any read")
			}
			for i, want := range tc.want {
				if _, err := events.Next(); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if got := events.Ready(); got != want {
					t.Errorf("after event %d: Ready() = %v, want %v", i, got, want)
				}
			}
			if _, err := events.Next(); err != io.EOF {
				t.Errorf("at the end: %v, want io.EOF", err)
			}
			if events.Ready() {
				t.Error("ready at the end")
			}
		})
	}
}

// TestSSEReaderRelease: a released reader comes back from the pool clean,
// whatever state the previous stream left it in.
func TestSSEReaderRelease(t *testing.T) {
	for range 3 {
		events := NewEventReader(strings.NewReader("data: a\n\ndata: partial"))
		if _, err := events.Next(); err != nil {
			t.Fatal(err)
		}
		events.Release()
		got, err := readEvents(strings.NewReader("data: b\n\n"))
		if !equalStrings(got, []string{"data: b\n\n"}) || err != io.EOF {
			t.Fatalf("after release: %q, %v", got, err)
		}
	}
	// a reader grown by a huge event is not pooled, but still works
	huge := "data: " + strings.Repeat("h", 100<<10) + "\n\n"
	if got, err := readEvents(strings.NewReader(huge)); !equalStrings(got, []string{huge}) || err != io.EOF {
		t.Fatalf("huge event: %d events, %v", len(got), err)
	}
}

// TestLineEnd: the first CR or LF is found wherever it falls against
// lineEnd's search windows.
func TestLineEnd(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 1023, 1024, 1500} {
		for _, tail := range []string{"\n", "\r", "\r\n", "\n\r"} {
			b := append(bytes.Repeat([]byte("a"), n), tail...)
			if got := lineEnd(b); got != n {
				t.Errorf("lineEnd(%d a's + %q) = %d, want %d", n, tail, got, n)
			}
			if got := lineEnd(b[:n]); got != -1 {
				t.Errorf("lineEnd(%d a's) = %d, want -1", n, got)
			}
		}
	}
}

func TestEventData(t *testing.T) {
	cases := []struct {
		ev   string
		want *string // nil: no data field
	}{
		{"data: x\n\n", ptr("x")},
		{"data:x\n\n", ptr("x")},
		{"data:  x\n\n", ptr(" x")}, // only one space is dropped
		{"data: x\r\n\r\n", ptr("x")},
		{"data: x \r\n\r\n", ptr("x ")},
		{"data:x\r\n", ptr("x")},
		{"event: message\ndata: {\"a\":1}\n\n", ptr(`{"a":1}`)},
		{"event: message\r\ndata: [DONE]\r\n\r\n", ptr("[DONE]")},
		{": keep-alive\n\n", nil},
		{": data: not data\n\n", nil},
		{"id: 1\nevent: ping\n\n", nil},
		{"data:\n\n", ptr("")},
		{"data: \n\n", ptr("")},
		{"data:\r\n\r\n", ptr("")},
		// the data lines of an event, joined by new lines
		{"data: first\ndata: second\n\n", ptr("first\nsecond")},
		{"data: first\r\ndata: second\r\n\r\n", ptr("first\nsecond")},
		{"data: first\rdata: second\r\r", ptr("first\nsecond")},
		{"data: a\rdata:b\r\ndata:  c\ndata:\n\n", ptr("a\nb\n c\n")},
		{"event: x\ndata: {\"a\":\ndata: 1}\nid: 3\n\n", ptr("{\"a\":\n1}")},
		{"data: a\n: comment\ndata: b\n\n", ptr("a\nb")},
		{"data: x\r\r", ptr("x")},
		{"event: e\rdata: x\r\r", ptr("x")},
		{"data: a\rb\n\n", ptr("a")}, // "b" is a line of its own: a field named b
		{"data\n\n", ptr("")},        // a field name alone: an empty value
		{"data\ndata: x\n\n", ptr("\nx")},
		{"datax: y\n\n", nil},
		// the event ends at its blank line
		{"data: a\n\ndata: b\n\n", ptr("a")},
		{"data: a\r\rdata: b\r\r", ptr("a")},
		{"data: a\r\n\r\ndata: b\r\n\r\n", ptr("a")},
		{"\ndata: a\n\n", nil},
		{"data: x", ptr("x")},
		{"Data: x\n\n", nil},
		{" data: x\n\n", nil},
		{"datum: x\n\n", nil},
		{"", nil},
		{"\n\n", nil},
	}
	for _, tc := range cases {
		got := EventData([]byte(tc.ev))
		switch {
		case tc.want == nil && got != nil:
			t.Errorf("EventData(%q) = %q, want nil", tc.ev, got)
		case tc.want != nil && got == nil:
			t.Errorf("EventData(%q) = nil, want %q", tc.ev, *tc.want)
		case tc.want != nil && string(got) != *tc.want:
			t.Errorf("EventData(%q) = %q, want %q", tc.ev, got, *tc.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestEventDataAllocations: a single data line is a slice of the event,
// whatever the line endings; several are joined in one allocation.
func TestEventDataAllocations(t *testing.T) {
	for _, ev := range []string{
		"data: " + string(benchChatChunk) + "\n\n",
		"data: " + string(benchChatChunk) + "\r\n\r\n",
		"data: " + string(benchChatChunk) + "\r\r",
		"event: delta\r\ndata: " + string(benchChatChunk) + "\r\nid: 4\r\n\r\n",
	} {
		b := []byte(ev)
		got := EventData(b)
		if string(got) != string(benchChatChunk) {
			t.Fatalf("EventData(%q) = %q", ev, got)
		}
		if &got[0] != &b[strings.Index(ev, "{")] {
			t.Errorf("EventData(%.30q…) is a copy", ev)
		}
		if n := testing.AllocsPerRun(100, func() { EventData(b) }); n != 0 {
			t.Errorf("EventData(%.30q…): %v allocations", ev, n)
		}
	}
	var sb strings.Builder
	const lines = 100000
	for i := range lines {
		fmt.Fprintf(&sb, "data: %d\r\n", i%10)
	}
	sb.WriteString("\r\n")
	b := []byte(sb.String())
	if n := testing.AllocsPerRun(10, func() { EventData(b) }); n != 1 {
		t.Errorf("%d data lines: %v allocations, want 1", lines, n)
	}
	if got := EventData(b); len(got) != 2*lines-1 || string(got[:6]) != "0\n1\n2\n" {
		t.Errorf("%d data lines: %d bytes, %.12q", lines, len(got), got)
	}
}

func TestStringChars(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{`"`, 0},
		{`hello"`, 5},
		{`hello", "content":"more"`, 5},
		{`a\"b"`, 3},
		{`a\\"`, 2},
		{`\u00e9x"`, 2},       // an escape is the one character it stands for
		{`\ud83d\ude00!"`, 2}, // a surrogate pair is one character
		{`é✓😀"`, 3},
		{`unterminated`, 12},
		{``, 0},
		{`\`, 1},
	}
	for _, tc := range cases {
		if got := StringChars([]byte(tc.in)); got != tc.want {
			t.Errorf("StringChars(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestIsEventStream(t *testing.T) {
	cases := map[string]bool{
		"text/event-stream":                   true,
		"Text/Event-Stream":                   true,
		"text/event-stream; charset=utf-8":    true,
		"text/event-stream;charset=utf-8":     true,
		"text/event-stream \t; charset=utf-8": true,
		"text/event-stream ":                  true,
		"text/event-streams":                  false,
		"text/event-stream-x":                 false,
		"application/json":                    false,
		"text/event":                          false,
		"":                                    false,
		" text/event-stream":                  false,
	}
	for ct, want := range cases {
		if got := IsEventStream(ct); got != want {
			t.Errorf("IsEventStream(%q) = %v, want %v", ct, got, want)
		}
	}
}

// FuzzSSEReader: whatever the input and however it is split into reads,
// the reader does not panic, every event ends in a blank line, the events
// are the input in order with only blank lines between them dropped,
// their data is what the SSE spec reads, and Next never reads after Ready
// said an event was buffered.
func FuzzSSEReader(f *testing.F) {
	f.Add("data: a\n\ndata: b\n\n", uint8(0))
	f.Add("\r\n: keep-alive\r\n\r\nevent: x\r\ndata: {}\r\n\r\n", uint8(1))
	f.Add("data: a\ndata: b\n\n\n\ndata: partial", uint8(3))
	f.Add("\n\n\n", uint8(2))
	f.Add("data: [DONE]\n\r\n", uint8(5))
	f.Add("data: x\r\r\n\n", uint8(7))
	f.Add("data: a\rdata: b\r\rdata: c\r\n\r", uint8(3))
	f.Add("event: e\r\ndata: 1\ndata: 2\r\r\n: x\n\rdata\n\n", uint8(6))
	f.Fuzz(func(t *testing.T, in string, split uint8) {
		var r io.Reader = strings.NewReader(in)
		switch split % 4 {
		case 1:
			r = iotest.OneByteReader(r)
		case 2:
			r = iotest.HalfReader(r)
		case 3:
			r = testkit.NewChunkReader(in[:int(split)%(len(in)+1)], in[int(split)%(len(in)+1):])
		}
		// a reader fresh from the pool's New, not NewEventReader: whether
		// the pool had one depends on the GC, and coverage that changes
		// from run to run sends the fuzzer minimizing in vain
		reads := &countingReader{r: r}
		events := eventReaders.New().(*EventReader)
		events.r.Reset(reads)
		rest := in
		var got []string // the data of the events
		for n := 0; ; n++ {
			ready, before := events.Ready(), reads.n
			ev, err := events.Next()
			if ready && (err != nil || reads.n != before) {
				t.Fatalf("Ready, but Next read (%v)", err)
			}
			if err != nil {
				if ev != nil {
					t.Fatalf("event %q returned with error %v", ev, err)
				}
				break
			}
			if n > len(in) {
				t.Fatalf("more events than bytes of input")
			}
			s := string(ev)
			if !endsInBlankLine(s) {
				t.Fatalf("event %q does not end in a blank line", s)
			}
			if strings.HasPrefix(s, "\n") || strings.HasPrefix(s, "\r") {
				t.Fatalf("event %q starts with a blank line", s)
			}
			if d := EventData(ev); d != nil {
				got = append(got, string(d))
			}
			rest = dropBlankLines(rest)
			if !strings.HasPrefix(rest, s) {
				t.Fatalf("event %q is not the next piece of the input %q", s, rest)
			}
			rest = rest[len(s):]
		}
		if want := specData(in); !equalStrings(got, want) {
			t.Fatalf("data %q, want %q as the SSE spec reads %q", got, want, in)
		}
	})
}

// countingReader counts the reads from r.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.n++
	return c.r.Read(p)
}

// endsInBlankLine reports whether an event ends with a blank line: a line
// ending (CR, LF or CR LF) followed by another.
func endsInBlankLine(s string) bool {
	for _, end := range []string{"\n\n", "\n\r", "\r\r", "\n\r\n"} {
		if strings.HasSuffix(s, end) {
			return true
		}
	}
	return false
}

// specData is the data of each event of a stream with data, read as the
// SSE spec's algorithm reads it: lines end with CR LF, LF or CR; a blank
// line dispatches an event; "data" fields are joined by new lines; an
// event the stream ends in the middle of is not dispatched.
func specData(in string) []string {
	var out []string
	var data strings.Builder
	has := false
	for len(in) > 0 {
		i := strings.IndexAny(in, "\r\n")
		if i < 0 {
			break // an unterminated line: the stream ended mid-event
		}
		line := in[:i]
		if in[i] == '\r' && i+1 < len(in) && in[i+1] == '\n' {
			i++
		}
		in = in[i+1:]
		if line == "" {
			if has {
				out = append(out, data.String())
			}
			data.Reset()
			has = false
			continue
		}
		name, value, colon := strings.Cut(line, ":")
		if colon {
			value = strings.TrimPrefix(value, " ")
		}
		if name == "data" {
			if has {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			has = true
		}
	}
	return out
}

// dropBlankLines drops the stray blank lines at the start of s.
func dropBlankLines(s string) string {
	return strings.TrimLeft(s, "\r\n")
}

func TestIsDone(t *testing.T) {
	for data, want := range map[string]bool{
		"[DONE]": true, "[DONE]  ": true, "[DONE]\t": true, "[DONE] \t ": true,
		"[DONE]x": true, "[DONE] x": true, // as the SDKs read it: the data's start
		"": false, "[DON": false, " [DONE]": false,
		`{"choices":[]}`: false, "[done]": false,
	} {
		if got := IsDone([]byte(data)); got != want {
			t.Errorf("IsDone(%q) = %v, want %v", data, got, want)
		}
	}
}
