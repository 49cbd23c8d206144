package openai

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// The benchmarks of the per-event reads of a stream that hotpath_bench_test
// does not cover: splitting events, their data, the Responses API's id.

// BenchmarkEventReader splits a stream of typical chunks, per event.
func BenchmarkEventReader(b *testing.B) {
	for _, bc := range []struct{ name, end string }{{"LF", "\n"}, {"CRLF", "\r\n"}} {
		ev := "data: " + string(benchChatChunk) + bc.end + bc.end
		stream := strings.Repeat(ev, 64)
		b.Run(bc.name, func(b *testing.B) {
			src := strings.NewReader(stream)
			events := NewEventReader(src)
			b.SetBytes(int64(len(ev)))
			b.ReportAllocs()
			for b.Loop() {
				_, err := events.Next()
				if err == io.EOF {
					src.Reset(stream)
					events.Release()
					events = NewEventReader(src)
					_, err = events.Next()
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			events.Release()
		})
	}
}

// BenchmarkEventData reads the data of one event: the single-line events
// every provider sends, and a multi-line one.
func BenchmarkEventData(b *testing.B) {
	for _, bc := range []struct{ name, ev string }{
		{"LF", "data: " + string(benchChatChunk) + "\n\n"},
		{"CRLF", "data: " + string(benchChatChunk) + "\r\n\r\n"},
		{"event-line", "event: response.output_text.delta\ndata: " + string(benchResponsesDelta) + "\n\n"},
		{"two-data-lines", "data: " + string(benchChatChunk[:100]) + "\ndata: " + string(benchChatChunk[100:]) + "\n\n"},
	} {
		ev := []byte(bc.ev)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(ev)))
			b.ReportAllocs()
			for b.Loop() {
				if EventData(ev) == nil {
					b.Fatal("no data")
				}
			}
		})
	}
}

// BenchmarkEventDataCRLines: an event of many short lines ending in a lone
// CR (no LF anywhere); ns/op must grow about as the size does (it grew as
// its square when each line's end was searched for over the rest).
func BenchmarkEventDataCRLines(b *testing.B) {
	for _, n := range []int{64 << 10, 256 << 10} {
		ev := append(bytes.Repeat([]byte("data: a\r"), n/8), '\r')
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(len(ev)))
			for b.Loop() {
				if EventData(ev) == nil {
					b.Fatal("no data")
				}
			}
		})
	}
}

var benchResponseCreated = []byte(`{"type":"response.created","sequence_number":0,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec","object":"response","created_at":1741290958,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-mini-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}`)

// nestedResponses is a "response" nested depth times, an id at the bottom.
func nestedResponses(depth int) []byte {
	var b bytes.Buffer
	for range depth {
		b.WriteString(`{"response":`)
	}
	b.WriteString(`{"id":"deep"}`)
	for range depth {
		b.WriteByte('}')
	}
	return b.Bytes()
}

// BenchmarkResponseID: a response.created event, a delta (no id), and
// nesting of growing depth, whose time per byte must stay flat.
func BenchmarkResponseID(b *testing.B) {
	cases := []struct {
		name string
		data []byte
	}{
		{"created", benchResponseCreated},
		{"delta", benchResponsesDelta},
	}
	for _, d := range []int{100, 1000, 5000} {
		cases = append(cases, struct {
			name string
			data []byte
		}{fmt.Sprintf("nested=%d", d), nestedResponses(d)})
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			b.ReportAllocs()
			for b.Loop() {
				ResponseID(bc.data)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(bc.data)), "ns/byte")
		})
	}
}
