package openai

import (
	"crypto/sha256"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestStreamTextBytesEveryText: an event's text is counted wherever the
// model can write it (tool call arguments, reasoning, refusals), not only
// in "content", so that a client cannot make an answer look free by asking
// for it in a tool call.
func TestStreamTextBytesEveryText(t *testing.T) {
	long := strings.Repeat("x", 1000)
	cases := []struct {
		name string
		api  API
		data string
		want int64
	}{
		{"chat tool call arguments", Chat, `{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"` + long + `"}}]}}]}`, 1000},
		{"chat arguments piece", Chat, `{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}`, 5},
		{"chat function_call", Chat, `{"choices":[{"delta":{"function_call":{"arguments":"` + long + `"}}}]}`, 1000},
		{"chat reasoning_content", Chat, `{"choices":[{"delta":{"content":null,"reasoning_content":"` + long + `"}}]}`, 1000},
		{"chat reasoning", Chat, `{"choices":[{"delta":{"reasoning":"` + long + `"}}]}`, 1000},
		// servers in transition send the same text under both names: once
		{"chat reasoning under both names", Chat, `{"choices":[{"delta":{"reasoning":"` + long + `","reasoning_content":"` + long + `"}}]}`, 1000},
		{"chat reasoning details are not counted again", Chat, `{"choices":[{"delta":{"reasoning":"abc","reasoning_details":[{"type":"reasoning.text","text":"abc"}]}}]}`, 3},
		{"chat refusal", Chat, `{"choices":[{"delta":{"refusal":"` + long + `"}}]}`, 1000},
		{"chat all of them", Chat, `{"choices":[{"delta":{"content":"ab","refusal":"c","reasoning_content":"de","tool_calls":[{"function":{"arguments":"fgh"}}]}}]}`, 8},
		{"chat null members", Chat, `{"choices":[{"delta":{"content":null,"refusal":null,"reasoning":null,"tool_calls":null}}]}`, 0},
		{"completions text", Completions, `{"choices":[{"text":"` + long + `","index":0,"logprobs":null}]}`, 1000},
		{"responses text delta", Responses, `{"type":"response.output_text.delta","delta":"` + long + `"}`, 1000},
		{"responses arguments delta", Responses, `{"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":0,"delta":"` + long + `"}`, 1000},
		{"responses reasoning delta", Responses, `{"type":"response.reasoning_text.delta","item_id":"rs_1","delta":"` + long + `"}`, 1000},
		{"responses reasoning summary delta", Responses, `{"type":"response.reasoning_summary_text.delta","item_id":"rs_1","delta":"` + long + `"}`, 1000},
		{"responses refusal delta", Responses, `{"type":"response.refusal.delta","delta":"` + long + `"}`, 1000},
		// the .done events and response.completed repeat what the deltas
		// carried: not counted again
		{"responses text done", Responses, `{"type":"response.output_text.done","text":"` + long + `"}`, 0},
		{"responses arguments done", Responses, `{"type":"response.function_call_arguments.done","arguments":"` + long + `"}`, 0},
		{"responses completed", Responses, `{"type":"response.completed","response":{"output":[{"type":"function_call","arguments":"` + long + `"},{"type":"message","content":[{"type":"output_text","text":"` + long + `"}]}]}}`, 0},
	}
	for _, tc := range cases {
		if got := StreamTextBytes(tc.api, []byte(tc.data)); got != tc.want {
			t.Errorf("%s: StreamTextBytes = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestAnswerTextBytesEveryText: the same for a JSON answer.
func TestAnswerTextBytesEveryText(t *testing.T) {
	long := strings.Repeat("y", 1000)
	cases := []struct {
		name string
		api  API
		data string
		want int64
	}{
		{"chat content", Chat, `{"choices":[{"message":{"role":"assistant","content":"` + long + `","refusal":null},"finish_reason":"stop"}]}`, 1000},
		{"chat tool calls", Chat, `{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"` + long + `"}},{"id":"call_2","type":"function","function":{"name":"g","arguments":"` + long + `"}}]}}]}`, 2000},
		{"chat function_call", Chat, `{"choices":[{"message":{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"` + long + `"}}}]}`, 1000},
		{"chat refusal", Chat, `{"choices":[{"message":{"role":"assistant","content":null,"refusal":"` + long + `"}}]}`, 1000},
		{"chat reasoning_content", Chat, `{"choices":[{"message":{"role":"assistant","content":"ok","reasoning_content":"` + long + `"}}]}`, 1002},
		{"chat reasoning", Chat, `{"choices":[{"message":{"role":"assistant","content":"ok","reasoning":"` + long + `"}}]}`, 1002},
		{"chat reasoning under both names", Chat, `{"choices":[{"message":{"content":"ok","reasoning":"` + long + `","reasoning_content":"` + long + `"}}]}`, 1002},
		{"chat logprobs are not text", Chat, `{"choices":[{"message":{"content":"ok"},"logprobs":{"content":[{"token":"ok","logprob":0}],"refusal":null}}]}`, 2},
		{"completions text", Completions, `{"choices":[{"text":"` + long + `","index":0}]}`, 1000},
		{"responses message", Responses, `{"object":"response","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"` + long + `","annotations":[]}]}],"text":{"format":{"type":"text"}}}`, 1000},
		{"responses function call", Responses, `{"object":"response","output":[{"type":"function_call","call_id":"c1","name":"f","arguments":"` + long + `"}]}`, 1000},
		{"responses reasoning", Responses, `{"object":"response","output":[{"type":"reasoning","summary":[{"type":"summary_text","text":"` + long + `"}],"content":[{"type":"reasoning_text","text":"` + long + `"}]}]}`, 2000},
		{"responses refusal", Responses, `{"object":"response","output":[{"type":"message","content":[{"type":"refusal","refusal":"` + long + `"}]}]}`, 1000},
		// a custom tool's call (type "custom", which the router serves as
		// priced) writes its text in "input"
		{"responses custom tool call", Responses, `{"object":"response","output":[{"type":"custom_tool_call","call_id":"c1","name":"exec","input":"` + long + `"}],"tools":[{"type":"custom","name":"exec"}]}`, 1000},
		{"chat custom tool call", Chat, `{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"custom","custom":{"name":"exec","input":"` + long + `"}}]}}]}`, 1000},
	}
	for _, tc := range cases {
		if got := AnswerTextBytes(tc.api, []byte(tc.data)); got != tc.want {
			t.Errorf("%s: AnswerTextBytes = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestInputCountsEveryMessageMember: every member of a message but its
// role is text the estimate counts: a prompt put in a tool call, a name or
// a member no API defines reserves what it costs.
func TestInputCountsEveryMessageMember(t *testing.T) {
	long := strings.Repeat("z", 4000)
	cases := []struct {
		name string
		api  API
		body string
	}{
		{"tool call arguments", Chat, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"` + long + `"}}]}]}`},
		{"function_call", Chat, `{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"` + long + `"}}]}`},
		{"name", Chat, `{"messages":[{"role":"user","name":"` + long + `","content":"hi"}]}`},
		{"reasoning_content", Chat, `{"messages":[{"role":"assistant","content":"ok","reasoning_content":"` + long + `"}]}`},
		{"an unknown member", Chat, `{"messages":[{"role":"user","content":"hi","x":{"y":["` + long + `"]}}]}`},
		{"a refusal part", Chat, `{"messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"` + long + `"}]}]}`},
		{"responses function_call item", Responses, `{"input":[{"type":"function_call","call_id":"c1","name":"f","arguments":"` + long + `"}]}`},
		{"responses function_call_output item", Responses, `{"input":[{"type":"function_call_output","call_id":"c1","output":"` + long + `"}]}`},
		{"responses reasoning item", Responses, `{"input":[{"type":"reasoning","summary":[{"type":"summary_text","text":"` + long + `"}]}]}`},
	}
	for _, tc := range cases {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.TextChars < 4000 || r.InputTokens() < 1000 {
			t.Errorf("%s: TextChars %d, InputTokens %d; want at least 4000 and 1000", tc.name, r.TextChars, r.InputTokens())
		}
		if r.TextChars > 4200 {
			t.Errorf("%s: TextChars %d: counted twice?", tc.name, r.TextChars)
		}
	}
	// role and content as before: the content's characters, the role not
	var r Request
	if err := r.Parse([]byte(`{"messages":[{"role":"user","content":"hello"},{"role":"assistant","content":[{"type":"text","text":"hi"}]}]}`), Chat); err != nil {
		t.Fatal(err)
	}
	if r.TextChars != 7 || r.LastUserChars != 5 {
		t.Errorf("TextChars %d, LastUserChars %d; want 7 and 5", r.TextChars, r.LastUserChars)
	}
	// an image part's URL is a fixed figure, not text
	if err := r.Parse([]byte(`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,`+long+`"}}]}]}`), Chat); err != nil {
		t.Fatal(err)
	}
	if r.TextChars != 0 || r.Images != 1 {
		t.Errorf("an image part: TextChars %d, Images %d; want 0 and 1", r.TextChars, r.Images)
	}
}

// TestInputCountsUTF8Bytes: the input estimate counts text in bytes of
// UTF-8, as the provider's tokenizer sees it: a Chinese character is
// about a token, not a quarter of one, so that a Chinese prompt reserves
// what it costs; characters stay characters for the rules (prompt_chars),
// and an escape counts as what it decodes to.
func TestInputCountsUTF8Bytes(t *testing.T) {
	zh := strings.Repeat("请推荐一件适合冬天穿的外套", 100) // 1,300 characters, 3,900 bytes
	for _, tc := range []struct {
		name, body    string
		chars, tokens int64
	}{
		{"raw", `{"messages":[{"role":"user","content":"` + zh + `"}]}`, 1300, 975 + MessageOverhead},
		{"escaped", `{"messages":[{"role":"user","content":"` + strings.Repeat(`\u8bf7`, 400) + `"}]}`, 400, 300 + MessageOverhead},
		{"a pair escaped", `{"messages":[{"role":"user","content":"` + strings.Repeat(`\ud83d\ude00`, 100) + `"}]}`, 100, 100 + MessageOverhead},
		{"parts", `{"messages":[{"role":"user","content":[{"type":"text","text":"` + zh + `"}]}]}`, 1300, 975 + MessageOverhead},
		{"responses input", `{"input":"` + zh + `","instructions":"` + zh + `"}`, 2600, 1950 + MessageOverhead},
		{"english", `{"messages":[{"role":"user","content":"` + strings.Repeat("abcd", 100) + `"}]}`, 400, 100 + MessageOverhead},
	} {
		api := Chat
		if strings.Contains(tc.body, `"input"`) {
			api = Responses
		}
		var r Request
		if err := r.Parse([]byte(tc.body), api); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.TextChars != tc.chars || r.InputTokens() != tc.tokens {
			t.Errorf("%s: TextChars %d, InputTokens %d; want %d and %d", tc.name, r.TextChars, r.InputTokens(), tc.chars, tc.tokens)
		}
	}
}

// TestInputCountsTools: tool and function definitions are counted, for
// every API (this was already so).
func TestInputCountsTools(t *testing.T) {
	long := strings.Repeat("d", 4000)
	tool := `{"type":"function","function":{"name":"f","description":"` + long + `"}}`
	for _, tc := range []struct {
		api  API
		body string
	}{
		{Chat, `{"messages":[],"tools":[` + tool + `]}`},
		{Chat, `{"messages":[],"functions":[{"name":"f","description":"` + long + `"}]}`},
		{Responses, `{"input":"hi","tools":[{"type":"function","name":"f","description":"` + long + `"}]}`},
	} {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Fatal(err)
		}
		if r.ToolBytes < 4000 || r.InputTokens() < 1000 {
			t.Errorf("%.60s: ToolBytes %d, InputTokens %d", tc.body, r.ToolBytes, r.InputTokens())
		}
	}
}

// TestUsageInChoice: a usage object in a choice (Moonshot's Kimi puts the
// stream's usage in choices[0].usage) is read when there is no top-level
// one; the chunk still has its choice, so it is not a usage-only chunk.
func TestUsageInChoice(t *testing.T) {
	kimi := `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":19,"completion_tokens":13,"total_tokens":32}}]}`
	if u, n, ok := ChunkUsage([]byte(kimi)); !ok || n != 1 || u != (Usage{Input: 19, Output: 13}) {
		t.Errorf("Kimi's final chunk: %+v, %d choices, found %v", u, n, ok)
	}
	// the top-level usage wins over a choice's
	both := `{"choices":[{"index":0,"usage":{"prompt_tokens":1,"completion_tokens":1}}],"usage":{"prompt_tokens":7,"completion_tokens":2}}`
	if u, n, ok := ChunkUsage([]byte(both)); !ok || n != 1 || u != (Usage{Input: 7, Output: 2}) {
		t.Errorf("top-level and choice usage: %+v, %d, %v", u, n, ok)
	}
	// a null top-level usage does not hide a choice's
	nullTop := `{"choices":[{"index":0,"usage":{"prompt_tokens":3,"completion_tokens":4}}],"usage":null}`
	if u, n, ok := ChunkUsage([]byte(nullTop)); !ok || n != 1 || u != (Usage{Input: 3, Output: 4}) {
		t.Errorf("null top-level usage: %+v, %d, %v", u, n, ok)
	}
	// several choices with usage: the largest counts, never the sum of the prompts
	two := `{"choices":[{"index":0,"usage":{"prompt_tokens":10,"completion_tokens":4}},{"index":1,"usage":{"prompt_tokens":10,"completion_tokens":9}}]}`
	if u, n, ok := ChunkUsage([]byte(two)); !ok || n != 2 || u != (Usage{Input: 10, Output: 9}) {
		t.Errorf("two choices with usage: %+v, %d, %v", u, n, ok)
	}
	// usage deeper in a choice (in its delta) is not a choice's usage
	if _, n, ok := ChunkUsage([]byte(`{"choices":[{"delta":{"usage":{"prompt_tokens":1}}}]}`)); ok || n == 0 {
		t.Errorf("usage in a delta: found %v, %d choices", ok, n)
	}
	answer := `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop","usage":{"prompt_tokens":19,"completion_tokens":13,"total_tokens":32}}]}`
	if u, found, valid := AnswerUsage([]byte(answer)); !found || !valid || u != (Usage{Input: 19, Output: 13}) {
		t.Errorf("a JSON answer's usage in its choice: %+v, %v, %v", u, found, valid)
	}
}

// TestUsageTotalAboveParts: a total above prompt + completion (Gemini's
// thinking tokens, billed but not in completion_tokens) is output; a total
// that already includes the reasoning tokens in the completion adds
// nothing.
func TestUsageTotalAboveParts(t *testing.T) {
	cases := []struct {
		name string
		obj  string
		want Usage
	}{
		{"gemini thinking", `{"prompt_tokens":10,"completion_tokens":5,"total_tokens":40}`, Usage{Input: 10, Output: 30}},
		{"total first", `{"total_tokens":40,"completion_tokens":5,"prompt_tokens":10}`, Usage{Input: 10, Output: 30}},
		{"responses", `{"input_tokens":10,"output_tokens":5,"total_tokens":40,"input_tokens_details":{"cached_tokens":4}}`, Usage{Input: 10, Output: 30, CachedInput: 4}},
		{"openai reasoning, included in completion", `{"prompt_tokens":10,"completion_tokens":50,"total_tokens":60,"completion_tokens_details":{"reasoning_tokens":45}}`, Usage{Input: 10, Output: 50}},
		{"total below the parts", `{"prompt_tokens":10,"completion_tokens":5,"total_tokens":12}`, Usage{Input: 10, Output: 5}},
		{"total below the prompt", `{"prompt_tokens":10,"completion_tokens":5,"total_tokens":3}`, Usage{Input: 10, Output: 5}},
		{"embeddings", `{"prompt_tokens":8,"total_tokens":8}`, Usage{Input: 8}},
		{"no total", `{"prompt_tokens":8,"completion_tokens":2}`, Usage{Input: 8, Output: 2}},
		{"total null", `{"prompt_tokens":8,"completion_tokens":2,"total_tokens":null}`, Usage{Input: 8, Output: 2}},
		{"huge total", `{"prompt_tokens":1,"total_tokens":99999999999999999999}`, Usage{Input: 1, Output: 1<<63 - 2}},
	}
	for _, tc := range cases {
		if u, ok := usageObject([]byte(tc.obj)); !ok || u != tc.want {
			t.Errorf("%s: usageObject = %+v, %v; want %+v", tc.name, u, ok, tc.want)
		}
	}
	if u, _, ok := ChunkUsage([]byte(`{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":40}}`)); !ok || u.Output != 30 {
		t.Errorf("ChunkUsage: %+v", u)
	}
	if u, found, _ := AnswerUsage([]byte(`{"usage":{"input_tokens":10,"output_tokens":5,"total_tokens":40}}`)); !found || u.Output != 30 {
		t.Errorf("AnswerUsage: %+v", u)
	}
}

// TestChatStreamToJSONLarge: a long stream is assembled in memory linear in
// its length (it was quadratic: the text so far copied at each chunk), and
// nothing is lost.
func TestChatStreamToJSONLarge(t *testing.T) {
	allocated := func(events []byte) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, err := ChatStreamToJSON(events); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := chatStream(1000), chatStream(20000)
	perSmall := float64(allocated(small)) / 1000
	perLarge := float64(allocated(large)) / 20000
	if perLarge > 2*perSmall {
		t.Errorf("%.0f bytes allocated per chunk of 20,000, %.0f per chunk of 1,000: not linear", perLarge, perSmall)
	}

	js, err := ChatStreamToJSON(large)
	if err != nil {
		t.Fatal(err)
	}
	var content, args strings.Builder
	for i := range 20000 {
		if i%10 == 9 {
			fmt.Fprintf(&args, "a%04d", i%10000)
		} else {
			fmt.Fprintf(&content, "w%04d ", i%10000)
		}
	}
	want := `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` + content.String() +
		`","tool_calls":[{"function":{"arguments":"` + args.String() + `"}}]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`
	if string(js) != want {
		t.Errorf("assembled %d bytes, want %d: %.200s…", len(js), len(want), js)
	}
}

// TestChatStreamToJSONManyToolCalls: tool calls are found by index in
// constant time, and merged as before.
func TestChatStreamToJSONManyToolCalls(t *testing.T) {
	var sb strings.Builder
	const calls = 3000
	for i := range calls {
		fmt.Fprintf(&sb, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,\"id\":\"call_%d\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n", i, i)
	}
	for i := range calls {
		fmt.Fprintf(&sb, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n", i)
	}
	js, err := ChatStreamToJSON([]byte(sb.String()))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(js), `"arguments":"{}"`); n != calls {
		t.Errorf("%d tool calls with their arguments, want %d", n, calls)
	}
	if !strings.Contains(string(js), `{"id":"call_2999","type":"function","function":{"name":"f","arguments":"{}"}}]`) {
		t.Errorf("the last tool call: %.200s", js[len(js)-200:])
	}
}

// TestMaxTokensByAPI: only the limit members the API reads set MaxTokens;
// another API's is refused (TestForeignOutputLimitRefused), unless null.
func TestMaxTokensByAPI(t *testing.T) {
	all := `"max_tokens":100,"max_completion_tokens":200,"max_output_tokens":300`
	cases := []struct {
		api  API
		body string
		want int64
	}{
		{Chat, `{"messages":[],"max_tokens":100,"max_completion_tokens":200,"max_output_tokens":null}`, 200},
		{Chat, `{"messages":[],"max_tokens":100}`, 100},
		{Chat, `{"messages":[],"max_completion_tokens":50,"max_tokens":100}`, 100},
		{Completions, `{"prompt":"p","max_tokens":100,"max_completion_tokens":null,"max_output_tokens":null}`, 100},
		{Responses, `{"input":"i","max_tokens":null,"max_completion_tokens":null,"max_output_tokens":300}`, 300},
		{Responses, `{"input":"i","max_tokens":null,"max_output_tokens":10}`, 10},
		{Embeddings, `{"input":"i",` + all + `}`, 0},
		// without an API, any of them (as before)
		{0, `{` + all + `}`, 300},
	}
	for _, tc := range cases {
		var r Request
		if err := r.Parse([]byte(tc.body), tc.api); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if r.MaxTokens != tc.want {
			t.Errorf("api %d %s: MaxTokens %d, want %d", tc.api, tc.body, r.MaxTokens, tc.want)
		}
	}
	// a member the API does not read is still checked: a provider that
	// reads it is refused the same body
	var r Request
	if err := r.Parse([]byte(`{"input":"i","max_tokens":-1}`), Responses); err == nil {
		t.Error("a negative max_tokens accepted for the Responses API")
	}
}

// TestKeyLoneSurrogateNames: member names whose escapes decode to U+FFFD
// for encoding/json but to different surrogates for other parsers
// (Python's json keeps them) never share a key.
func TestKeyLoneSurrogateNames(t *testing.T) {
	bodies := []string{
		`{"o":{"a\ud800":1}}`,
		`{"o":{"a\udbff":1}}`,
		`{"o":{"a\udc00":1}}`,
		`{"o":{"a\ufffd":1}}`,
		`{"o":{"a\ud800\ud800":1}}`,
		`{"o":{"a\ud800\udc00":1}}`,
		`{"a\ud800":1}`,
		`{"a\udbff":1}`,
		`{"a\ufffd":1}`,
	}
	seen := map[[sha256.Size]byte]string{}
	for _, b := range bodies {
		k := bodyKey(t, b)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s and %s share a key", b, prev)
		}
		seen[k] = b
	}
	// the same name written two ways is still one
	if bodyKey(t, `{"o":{"a\ufffd":1}}`) != bodyKey(t, "{\"o\":{\"a\uFFFD\":1}}") ||
		bodyKey(t, `{"o":{"a\ud83d\ude00":1}}`) != bodyKey(t, `{"o":{"a😀":1}}`) {
		t.Error("a name escaped and unescaped: two keys")
	}
	// at the top level, sorted by decoded name whatever the order written
	if bodyKey(t, `{"b":1,"a\ud800":2,"c":3}`) != bodyKey(t, `{"c":3,"a\ud800":2,"b":1}`) {
		t.Error("the order of top-level members with a lone surrogate changes the key")
	}
	// two names that encoding/json takes for one keep their order
	if bodyKey(t, `{"o":{"a\ud800":1,"a\udbff":2}}`) == bodyKey(t, `{"o":{"a\udbff":2,"a\ud800":1}}`) {
		t.Error("members a parser merges: their order is not in the key")
	}
}

// TestKeyLoneSurrogateValues: string values are keyed as written, so lone
// surrogates never merged there (this was already so).
func TestKeyLoneSurrogateValues(t *testing.T) {
	seen := map[[sha256.Size]byte]string{}
	for _, b := range []string{`{"a":"x\ud800"}`, `{"a":"x\udbff"}`, `{"a":"x\ufffd"}`, `{"a":["x\ud800"]}`, `{"a":["x\udbff"]}`} {
		k := bodyKey(t, b)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s and %s share a key", b, prev)
		}
		seen[k] = b
	}
}

func TestLoneSurrogate(t *testing.T) {
	for raw, want := range map[string]bool{
		`a`: false, `a\n`: false, `\u00e9`: false, `\ud83d\ude00`: false, `x\ud83d\ude00y\ud83d\ude01`: false,
		`\\ud800`: false, `\\\\ud800`: false, `\ufffd`: false,
		`\ud800`: true, `a\udbff`: true, `\udc00`: true, `\ud800x`: true, `\ud800\n`: true, `\ud800\ud800`: true,
		`\ud83d\ude00\udc00`: true, `\\\ud800`: true, `\ud83d\ude00\ud800`: true, `\uD800`: true,
	} {
		if got := loneSurrogate([]byte(raw)); got != want {
			t.Errorf("loneSurrogate(%s) = %v, want %v", raw, got, want)
		}
	}
}

// TestInputOtherMembersMedia: a data URL in a message's other members (a
// screenshot in a Responses tool output) is the medium it holds, counted
// at its fixed figure, not as text; the text around it is text.
func TestInputOtherMembersMedia(t *testing.T) {
	b64 := strings.Repeat("QUJD", 100000)
	body := `{"input":[{"type":"computer_call_output","call_id":"c1","output":{"type":"computer_screenshot","image_url":"data:image/png;base64,` + b64 + `"}},` +
		`{"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"the chart:"},{"type":"input_image","image_url":"data:image/jpeg;base64,` + b64 + `"},` +
		`{"type":"input_file","filename":"a.pdf","file_data":"data:application/pdf;base64,` + b64 + `"},{"type":"x","data":"data:audio/wav;base64,` + b64 + `"}]}]}`
	var r Request
	if err := r.Parse([]byte(body), Responses); err != nil {
		t.Fatal(err)
	}
	if r.Images != 2 || r.Files != 1 || r.Audio != 1 || r.TextChars > 300 || r.TextChars < 10 {
		t.Errorf("images %d files %d audio %d, text %d characters; want 2, 1, 1 and the text only", r.Images, r.Files, r.Audio, r.TextChars)
	}
}
