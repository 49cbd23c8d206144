package llmrouter

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

var update = flag.Bool("update", false, "rewrite golden files")

func adapt(t *testing.T, filename string, src []byte) ([]byte, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": filename})
	return out, err
}

// TestCaddyfileAdaptGolden: every subdirective adapts to the JSON in
// testdata, and that JSON loads back into the same config.
func TestCaddyfileAdaptGolden(t *testing.T) {
	src, err := os.ReadFile("testdata/full.caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	out, err := adapt(t, "testdata/full.caddyfile", src)
	if err != nil {
		t.Fatal(err)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	if *update {
		if err := os.WriteFile("testdata/full.json", pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile("testdata/full.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pretty.Bytes(), golden) {
		t.Errorf("adapted JSON differs from testdata/full.json (run go test -run TestCaddyfileAdaptGolden -update):\n%s", pretty.String())
	}
	if strings.Contains(pretty.String(), "HOLYSHEEP") == false || !strings.Contains(pretty.String(), "{env.HOLYSHEEP_API_KEY}") {
		t.Error("the {env.HOLYSHEEP_API_KEY} placeholder did not survive adaptation")
	}

	// the handler's JSON is what Caddy loads: decode it and encode it
	// again; nothing may be lost or changed
	handler := findHandler(t, out)
	var r Router
	dec := json.NewDecoder(bytes.NewReader(handler))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&struct {
		Handler string `json:"handler"`
		*Router
	}{Router: &r}); err != nil {
		t.Fatalf("adapted JSON does not load: %v", err)
	}
	again, err := json.Marshal(struct {
		Handler string `json:"handler"`
		*Router
	}{"llm_router", &r})
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(handler, again) {
		t.Errorf("JSON round trip changed the config:\n%s\n%s", handler, again)
	}
	if err := r.validate(); err != nil {
		t.Errorf("adapted config does not validate: %v", err)
	}
}

// findHandler digs the llm_router handler's JSON out of an adapted config.
func findHandler(t *testing.T, cfg []byte) json.RawMessage {
	t.Helper()
	var found json.RawMessage
	var walk func(v json.RawMessage)
	walk = func(v json.RawMessage) {
		var obj map[string]json.RawMessage
		if json.Unmarshal(v, &obj) == nil {
			if h, ok := obj["handler"]; ok && string(h) == `"llm_router"` {
				found = v
				return
			}
			for _, c := range obj {
				walk(c)
			}
			return
		}
		var arr []json.RawMessage
		if json.Unmarshal(v, &arr) == nil {
			for _, c := range arr {
				walk(c)
			}
		}
	}
	walk(cfg)
	if found == nil {
		t.Fatalf("no llm_router handler in %s", cfg)
	}
	return found
}

// TestCaddyfileErrors: a malformed Caddyfile names the file and the line
// of the mistake.
func TestCaddyfileErrors(t *testing.T) {
	const base = `:8080 {
	llm_router {
		provider p {
			base_url http://127.0.0.1:1/v1
		}
		model a
		model b {
			priority 2
		}
		route r a b
%s
	}
}
`
	cases := []struct {
		name, extra, want string
		line              int
	}{
		{"unknown subdirective", "\t\tbogus 1", `unrecognized llm_router subdirective "bogus"`, 11},
		{"missing argument", "\t\tdefault_route", "wrong argument count", 11},
		{"bad duration", "\t\tfailover {\n\t\t\ttry_duration soon\n\t\t}", `invalid duration "soon"`, 12},
		{"negative duration", "\t\tfailover {\n\t\t\tcooldown -5s\n\t\t}", `invalid duration "-5s"`, 12},
		{"unknown balance", "\t\tfailover {\n\t\t\tbalance fastest\n\t\t}", `balance must be weighted or latency, got "fastest"`, 12},
		{"transport not http", "\t\tprovider q {\n\t\t\ttransport fastcgi\n\t\t}", `provider transport must be http`, 12},
		{"route to an unknown model", "\t\troute bad a nope", `unknown model "nope"`, 11},
		{"duplicate deployment", "\t\tmodel a {\n\t\t\tprovider p\n\t\t}", "duplicate deployment", 11},
		{"fallback loop", "\t\tmodel c {\n\t\t\tfallback d\n\t\t}\n\t\tmodel d {\n\t\t\tfallback c\n\t\t}", "fallback loop: c -> d -> c", 12},
		{"fallback to unknown", "\t\tmodel c {\n\t\t\tpriority 2\n\t\t\tfallback zz\n\t\t}", `fallback names unknown model "zz"`, 13},
		{"fallback typo", "\t\tmodel c {\n\t\t\tfallback a\n\t\t\tfallback bb\n\t\t}", `fallback names unknown model "bb" (did you mean "b"?)`, 13},
		{"unknown provider", "\t\tmodel c {\n\t\t\tweight 2\n\t\t\tprovider nobody\n\t\t}", `unknown provider "nobody"`, 13},
		{"provider typo", "\t\tmodel c {\n\t\t\tprovider pp\n\t\t}", `unknown provider "pp" (did you mean "p"?)`, 12},
		{"model subdirective typo", "\t\tmodel c {\n\t\t\tprioirty 2\n\t\t}", `unrecognized model subdirective "prioirty" (did you mean "priority"?)`, 12},
		{"llm_router subdirective typo", "\t\tdefault_rout r", `unrecognized llm_router subdirective "default_rout" (did you mean "default_route"?)`, 11},
		{"route model typo", "\t\troute bad a bb", `unknown model "bb" (did you mean "b"?)`, 11},
		{"default route typo", "\t\tdefault_route rr", `unknown route "rr" (did you mean "r"?)`, 11},
		{"route mixing kinds", "\t\tmodel e {\n\t\t\tkind embedding\n\t\t}\n\t\troute mixed a e", `mixes kinds`, 14},
		{"embedding default route", "\t\tmodel text-embedding-3-small\n\t\troute emb text-embedding-3-small\n\t\tdefault_route emb", `serves embeddings`, 13},
		{"bad kind", "\t\tmodel c {\n\t\t\tkind vision\n\t\t}", `kind must be chat or embedding`, 12},
		{"budget bad period", "\t\tbudget b {\n\t\t\tlimit 5 per fortnight\n\t\t}", `period must be hour, day, week or month, got "fortnight"`, 12},
		{"budget unknown downgrade", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\tdowngrade rr\n\t\t}", `downgrade names unknown route "rr" (did you mean "r"?)`, 11},
		{"budget unknown match", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\tmatch aa\n\t\t}", `match names unknown route or model "aa" (did you mean "a"?)`, 11},
		{"budget subdirective typo", "\t\tbudget b {\n\t\t\tlimt 5 per day\n\t\t}", `unrecognized budget subdirective "limt" (did you mean "limit"?)`, 12},
		{"budget bad timezone", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\ttimezone Mars/Olympus\n\t\t}", `unknown zone "Mars/Olympus"`, 13},
		{"budget two daily limits", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\tlimit 6 per day\n\t\t}", `two limits per day`, 11},
		{"budget output_cap not on or off", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\toutput_cap maybe\n\t\t}", `want on or off`, 13},
		{"provider unknown output_limit_field", "\t\tprovider q {\n\t\t\toutput_limit_field max_output_tokens\n\t\t}", `output_limit_field: want max_completion_tokens or max_tokens, got "max_output_tokens"`, 12},
		{"rule type error", "\t\troute q a {\n\t\t\twhen messages > 1\n\t\t\twhen has_tools > 3\n\t\t}", "when #2: ERROR: <input>:1:11: found no matching overload for '_>_' applied to '(bool, int)'", 13},
		{"rule unknown variable", "\t\troute q a {\n\t\t\twhen lenght > 3\n\t\t}", "undeclared reference to 'lenght'", 12},
		{"rule not a bool", "\t\troute q a {\n\t\t\twhen prompt_chars\n\t\t}", `"prompt_chars" is a int, not a bool`, 12},
		{"route block typo", "\t\troute q a {\n\t\t\twhn x\n\t\t}", `unrecognized route subdirective "whn" (did you mean "when"?)`, 12},
		{"bad probe body", "\t\thealth_check {\n\t\t\tprobe_body nope\n\t\t}", `probe_body must be a JSON object`, 12},
		{"negative price", "\t\tmodel c {\n\t\t\tprice -1\n\t\t}", "price must be a non-negative number", 12},
		// strconv reads NaN and Inf, which JSON cannot carry: the adapted
		// config held the handler as null
		{"NaN price", "\t\tmodel c {\n\t\t\tprice NaN\n\t\t}", "price must be a non-negative number", 12},
		{"infinite output price", "\t\tmodel c {\n\t\t\tprice 1 Inf\n\t\t}", "price must be a non-negative number", 12},
		{"budget NaN hard", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\thard NaN\n\t\t}", "want a positive amount", 13},
		{"budget infinite limit", "\t\tbudget b {\n\t\t\tlimit +Inf per day\n\t\t}", "want a positive amount", 12},
		{"budget NaN warn_at", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\twarn_at NaN%\n\t\t}", "want a percentage", 13},
		{"NaN currency rate", "\t\tcurrency CNY NaN", "currency rate must be a positive number", 11},
		{"unknown default route", "\t\tdefault_route nowhere", `unknown route "nowhere"`, 11},
		{"bad size", "\t\tmax_request_body lots", `invalid size "lots"`, 11},
		{"context_reserve not a number", "\t\tcontext_reserve 128k", `context_reserve: want a positive number of tokens, got "128k"`, 11},
		{"context_reserve zero", "\t\tcontext_reserve 0", `context_reserve: want a positive number of tokens, got "0"`, 11},
		{"service_tiers without a tier", "\t\tservice_tiers", "wrong argument count", 11},
		{"service_tiers typo", "\t\tservice_tier priority", `unrecognized llm_router subdirective "service_tier" (did you mean "service_tiers"?)`, 11},
		{"bad currency rate", "\t\tcurrency CNY zero", "currency rate must be a positive number", 11},
		{"disable_below out of range", "\t\thealth_check {\n\t\t\tdisable_below 101\n\t\t}", "disable_below must be a score from 0 to 100", 12},
		{"unknown model subdirective", "\t\tmodel c {\n\t\t\tcolour blue\n\t\t}", `unrecognized model subdirective "colour"`, 12},
		{"unknown provider subdirective", "\t\tprovider q {\n\t\t\tkey x\n\t\t}", `unrecognized provider subdirective "key"`, 12},
		{"route with no models", "\t\troute lonely", "wrong argument count", 11},
		{"semantic unknown model", "\t\tcache {\n\t\t\tsemantic {\n\t\t\t\tthreshold 0.9\n\t\t\t\tmodel embed\n\t\t\t}\n\t\t}", `names unknown model "embed"`, 14},
		{"semantic chat model", "\t\tcache {\n\t\t\tsemantic {\n\t\t\t\tmodel a\n\t\t\t}\n\t\t}", `model "a" is not an embedding model`, 13},
		{"semantic without model", "\t\tcache {\n\t\t\tttl 1m\n\t\t\tsemantic {\n\t\t\t\tthreshold 0.9\n\t\t\t}\n\t\t}", `needs the embedding model`, 13},
		{"semantic bad threshold", "\t\tcache {\n\t\t\tsemantic {\n\t\t\t\tthreshold 1.5\n\t\t\t}\n\t\t}", `threshold must be a similarity above 0 and at most 1, not "1.5"`, 13},
		{"forward a credential", "\t\tforward_header X-Custom authorization", `forward_header "authorization" is never forwarded: a client credential`, 11},
		{"forward another gateway's control", "\t\tforward_header X-Custom\n\t\tforward_header x-portkey-config", `forward_header "x-portkey-config" is never forwarded: another gateway's control header`, 12},
		{"forward account steering", "\t\tforward_header OpenAI-Organization", `forward_header "OpenAI-Organization" is never forwarded: picks which of the operator's provider accounts`, 11},
		{"forward a hop-by-hop header", "\t\tforward_header Keep-Alive", `forward_header "Keep-Alive" is never forwarded: hop-by-hop`, 11},
		{"forward the router's own", "\t\tforward_header X-LLM-Route", `forward_header "X-LLM-Route" is never forwarded: the router's own`, 11},
		{"forward_header without a field", "\t\tforward_header", "wrong argument count", 11},
		// scope per team, then shared: the second silently won, sharing
		// every team's answers with every other
		{"cache scope and shared", "\t\tcache {\n\t\t\tscope {http.request.header.X-Team}\n\t\t\tscope shared\n\t\t}", `scope shared shares across every client; it cannot be combined with scope placeholders`, 13},
		{"cache shared with a placeholder", "\t\tcache {\n\t\t\tscope shared {http.request.header.X-Team}\n\t\t}", `scope shared shares across every client; it cannot be combined with scope placeholders`, 12},
		// a setting given twice: the second silently replaced the first
		{"api_key twice", "\t\tprovider q {\n\t\t\tapi_key {env.A}\n\t\t\tapi_key {env.B}\n\t\t}", `api_key given twice`, 13},
		{"cache block twice", "\t\tcache {\n\t\t\tscope {http.request.header.X-Team}\n\t\t}\n\t\tcache {\n\t\t\tttl 1h\n\t\t}", `cache given twice`, 14},
		{"budget key twice", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\tkey {http.request.header.X-User}\n\t\t\tkey {http.request.header.X-Team}\n\t\t}", `key given twice`, 14},
		{"model price twice", "\t\tmodel c {\n\t\t\tprice 1 2\n\t\t\tprice 0.1\n\t\t}", `price given twice`, 13},
		{"failover cooldown twice", "\t\tfailover {\n\t\t\tcooldown 5s\n\t\t\tcooldown 10s\n\t\t}", `cooldown given twice`, 13},
		{"currency twice", "\t\tcurrency CNY 7.2\n\t\tcurrency USD", `currency given twice`, 12},
		// a credential as a label: every client's key in the metrics and stats
		{"client_label of a credential", "\t\tclient_label {http.request.header.Authorization} max 50", `client_label: {http.request.header.Authorization} is a client credential`, 11},
		{"client_label of a credential in text", "\t\tclient_label team-{http.request.header.X-Api-Key}", `client_label: {http.request.header.X-Api-Key} is a client credential`, 11},
		{"client_label of a credential after another", "\t\tclient_label {http.request.header.X-Team}{http.request.header.Authorization}", `client_label: {http.request.header.Authorization} is a client credential`, 11},
		{"budget label of a credential", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\tkey {http.request.header.Authorization} label\n\t\t}", `budget b: key {http.request.header.Authorization} is a client credential`, 11},
		// the whole query string or URI holds a credential parameter
		// (?key=...) when the client sends one, the body the prompt
		{"client_label of the query string", "\t\tclient_label {http.request.uri.query}", `client_label: {http.request.uri.query} is a client credential`, 11},
		{"client_label of the URI", "\t\tclient_label {uri}", `client_label: {http.request.uri} is a client credential`, 11},
		{"client_label of the original query", "\t\tclient_label {http.request.orig_uri.prefixed_query}", `client_label: {http.request.orig_uri.prefixed_query} is a client credential`, 11},
		{"client_label of the body", "\t\tclient_label {http.request.body}", `client_label: {http.request.body} is a client credential`, 11},
		{"budget label of the query string", "\t\tbudget b {\n\t\t\tlimit 5 per day\n\t\t\tkey {query} label\n\t\t}", `budget b: key {http.request.uri.query} is a client credential`, 11},
		// a request for model "auto" is routed automatically: the route was
		// reached only by the header
		{"route named auto", "\t\troute auto a", `"auto" is reserved for automatic routing`, 11},
		// the api_key's Authorization replaced the header's without a word
		{"api_key and an Authorization header", "\t\tprovider q {\n\t\t\tapi_key sk-one-0000000001\n\t\t\theader authorization \"Bearer sk-two-0000000002\"\n\t\t}", `api_key and header Authorization both set the Authorization header`, 11},
		// headers the router or the connection sets: dropped without a word
		{"provider header Host", "\t\tprovider q {\n\t\t\theader Host api.example.test\n\t\t}", `header Host is set by the router or the connection, not by the config`, 11},
		{"provider header Content-Type", "\t\tprovider q {\n\t\t\theader content-type text/plain\n\t\t}", `header Content-Type is set by the router or the connection, not by the config`, 11},
		// an https request's own headers go through a proxy's tunnel to the
		// provider: the proxy's password with them
		{"provider header Proxy-Authorization to https", "\t\tprovider q {\n\t\t\theader Proxy-Authorization \"Basic cHJveHk6cHc=\"\n\t\t}", `header Proxy-Authorization would reach the provider`, 11},
		// transport settings the router's requests cannot honour: the
		// provider's key went upstream in plaintext without a word
		{"transport tls to an http base_url", "\t\tprovider q {\n\t\t\tbase_url http://127.0.0.1:2/v1\n\t\t\ttransport http {\n\t\t\t\ttls_insecure_skip_verify\n\t\t\t}\n\t\t}", `base_url "http://127.0.0.1:2/v1" is plain http, but its transport sets up TLS`, 11},
		{"transport tls_except_ports", "\t\tprovider q {\n\t\t\tbase_url https://127.0.0.1:2/v1\n\t\t\ttransport http {\n\t\t\t\ttls\n\t\t\t\ttls_except_ports 2\n\t\t\t}\n\t\t}", `transport: tls_except_ports`, 11},
		{"transport proxy_protocol", "\t\tprovider q {\n\t\t\ttransport http {\n\t\t\t\tproxy_protocol v2\n\t\t\t}\n\t\t}", `transport: proxy_protocol`, 11},
		{"semantic typo", "\t\tcache {\n\t\t\tsemantic {\n\t\t\t\tthreshhold 0.9\n\t\t\t}\n\t\t}", `unrecognized semantic subdirective "threshhold" (did you mean "threshold"?)`, 13},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(base, "%s", tc.extra, 1)
			_, err := adapt(t, "Caddyfile", []byte(src))
			if err == nil {
				t.Fatalf("no error for:\n%s", src)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if where := "Caddyfile:" + itoa(tc.line); !strings.Contains(err.Error(), where) {
				t.Errorf("error %q does not name %s", err, where)
			}
			if n := strings.Count(err.Error(), "Caddyfile:"); n != 1 {
				t.Errorf("error %q names %d locations, want one", err, n)
			}
		})
	}
	t.Run("no provider", func(t *testing.T) {
		_, err := adapt(t, "Caddyfile", []byte(":8080 {\n\tllm_router {\n\t\tmodel a\n\t}\n}\n"))
		if err == nil || !strings.Contains(err.Error(), "at least one provider") || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("error = %v", err)
		}
	})
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestCaddyfileHealthCheckOff(t *testing.T) {
	src := ":8080 {\n\tllm_router {\n\t\tprovider p\n\t\tmodel a\n\t\thealth_check {\n\t\t\tinterval off\n\t\t}\n\t}\n}\n"
	out, err := adapt(t, "Caddyfile", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(findHandler(t, out)), `"health_check":{"off":true}`) {
		t.Errorf("interval off did not adapt to off:true: %s", findHandler(t, out))
	}
}

func TestCaddyfileContextReserve(t *testing.T) {
	src := ":8080 {\n\tllm_router {\n\t\tprovider p\n\t\tmodel a\n\t\tcontext_reserve 1000000\n\t}\n}\n"
	out, err := adapt(t, "Caddyfile", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(findHandler(t, out)), `"context_reserve":1000000`) {
		t.Errorf("context_reserve did not adapt: %s", findHandler(t, out))
	}
}

func TestCaddyfileStreamIdleTimeout(t *testing.T) {
	for arg, want := range map[string]string{"0": `"stream_idle_timeout":-1`, "off": `"stream_idle_timeout":-1`, "90s": `"stream_idle_timeout":90000000000`} {
		src := ":8080 {\n\tllm_router {\n\t\tprovider p\n\t\tmodel a\n\t\tfailover {\n\t\t\tstream_idle_timeout " + arg + "\n\t\t}\n\t}\n}\n"
		out, err := adapt(t, "Caddyfile", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(findHandler(t, out)), want) {
			t.Errorf("stream_idle_timeout %s: %s, want %s", arg, findHandler(t, out), want)
		}
	}
	r := &Router{Providers: []*Provider{{Name: "p"}}, Models: []*Model{{Name: "a"}}}
	r.setDefaults()
	if time.Duration(r.Failover.StreamIdleTimeout) != 2*time.Minute {
		t.Errorf("default stream_idle_timeout %v, want 2m", time.Duration(r.Failover.StreamIdleTimeout))
	}
}
