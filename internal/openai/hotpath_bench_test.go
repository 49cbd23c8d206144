package openai

import (
	"fmt"
	"strings"
	"testing"
)

// The benchmarks of what runs on every request and every stream event: the
// request scan, the text counts of the output estimates, the usage reads.

var benchChatChunk = []byte(`{"id":"chatcmpl-9x2Yk3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1-mini-2025-04-14","system_fingerprint":"fp_38647f5e19","choices":[{"index":0,"delta":{"content":" shipping"},"logprobs":null,"finish_reason":null}],"usage":null}`)

var benchToolChunk = []byte(`{"id":"chatcmpl-9x2Yk3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1-mini-2025-04-14","system_fingerprint":"fp_38647f5e19","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Lyon\""}}]},"logprobs":null,"finish_reason":null}]}`)

var benchUsageChunk = []byte(`{"id":"chatcmpl-9x2Yk3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1-mini-2025-04-14","system_fingerprint":"fp_38647f5e19","choices":[],"usage":{"prompt_tokens":41,"completion_tokens":64,"total_tokens":105,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`)

var benchResponsesDelta = []byte(`{"type":"response.output_text.delta","sequence_number":12,"item_id":"msg_67c9fdcecf488190bdd9a0409de3a1ec","output_index":0,"content_index":0,"delta":" shipping","logprobs":[]}`)

var benchChatAnswer = []byte(`{"id":"chatcmpl-9x2Yk3","object":"chat.completion","created":1700000000,"model":"gpt-4.1-mini-2025-04-14","choices":[{"index":0,"message":{"role":"assistant","content":"Orders placed on Monday with express delivery to Lyon ship the same day and arrive on Tuesday before noon. Express shipping costs 12 euros.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":41,"completion_tokens":27,"total_tokens":68,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_38647f5e19"}`)

func BenchmarkStreamEvent(b *testing.B) {
	for _, bc := range []struct {
		name string
		api  API
		data []byte
	}{
		{"chat-content", Chat, benchChatChunk},
		{"chat-tool", Chat, benchToolChunk},
		{"chat-usage", Chat, benchUsageChunk},
		{"responses-delta", Responses, benchResponsesDelta},
	} {
		b.Run("text/"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				StreamTextBytes(bc.api, bc.data)
			}
		})
		b.Run("usage/"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				ChunkUsage(bc.data)
			}
		})
	}
}

func BenchmarkAnswer(b *testing.B) {
	b.Run("usage", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(benchChatAnswer)))
		for b.Loop() {
			AnswerUsage(benchChatAnswer)
		}
	})
	b.Run("text", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(benchChatAnswer)))
		for b.Loop() {
			AnswerTextBytes(Chat, benchChatAnswer)
		}
	})
}

// BenchmarkParseAgent is the scan of an agent's request: a conversation
// with tool calls and their results, and tool definitions.
func BenchmarkParseAgent(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"model":"auto","stream":true,"max_completion_tokens":512,"messages":[{"role":"system","content":"You are a support agent. Use the tools to look up orders."}`)
	for i := range 8 {
		fmt.Fprintf(&sb, `,{"role":"user","content":"Where is order %d? It was placed on Monday with express delivery to Lyon."}`, i)
		fmt.Fprintf(&sb, `,{"role":"assistant","content":null,"tool_calls":[{"id":"call_%d","type":"function","function":{"name":"track_order","arguments":"{\"order_id\":\"%d\",\"carrier\":\"express\"}"}}]}`, i, i)
		fmt.Fprintf(&sb, `,{"role":"tool","tool_call_id":"call_%d","content":"{\"status\":\"in transit\",\"eta\":\"Tuesday 11:00\"}"}`, i)
	}
	sb.WriteString(`],"tools":[{"type":"function","function":{"name":"track_order","description":"Track an order","parameters":{"type":"object","properties":{"order_id":{"type":"string"},"carrier":{"type":"string"}},"required":["order_id"]}}}]}`)
	body := []byte(sb.String())
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var r Request
		if err := r.Parse(body, Chat); err != nil {
			b.Fatal(err)
		}
	}
}

// chatStream is a chat stream of n content chunks (and, every tenth, a
// piece of a tool call's arguments), a finish chunk, a usage chunk and
// [DONE].
func chatStream(n int) []byte {
	var sb strings.Builder
	sb.WriteString("data: {\"id\":\"c\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
	for i := range n {
		if i%10 == 9 {
			fmt.Fprintf(&sb, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"a%04d\"}}]}}]}\n\n", i%10000)
			continue
		}
		fmt.Fprintf(&sb, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w%04d \"}}]}\n\n", i%10000)
	}
	sb.WriteString("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
	sb.WriteString("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n")
	sb.WriteString("data: [DONE]\n\n")
	return []byte(sb.String())
}

// BenchmarkChatStreamToJSON: the time per chunk stays the same from 1,000
// to 20,000 chunks (the assembly is linear).
func BenchmarkChatStreamToJSON(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		events := chatStream(n)
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ChatStreamToJSON(events); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/chunk")
		})
	}
}
