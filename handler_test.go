package llmrouter

import (
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestClassifyStatus(t *testing.T) {
	cases := []struct {
		code    int
		outcome outcome
		relay   bool
	}{
		{200, outcomeSuccess, true},
		{201, outcomeSuccess, true},
		{204, outcomeSuccess, true},
		{299, outcomeSuccess, true},
		{400, outcomeClientError, true},
		{401, outcomeRejected, false}, // a bad key: try another deployment
		{403, outcomeRejected, false},
		{404, outcomeRejected, false}, // a model this provider lacks
		{405, outcomeClientError, true},
		{408, outcomeTimeout, false},
		{409, outcomeClientError, true},
		{413, outcomeClientError, true},
		{422, outcomeClientError, true},
		{429, outcomeRateLimited, false},
		{499, outcomeClientError, true},
		{500, outcomeServerError, false},
		{501, outcomeServerError, false},
		{502, outcomeServerError, false},
		{503, outcomeServerError, false},
		{504, outcomeServerError, false},
		{529, outcomeServerError, false},
		{599, outcomeServerError, false},
		{300, outcomeServerError, false},
		{301, outcomeServerError, false},
		{302, outcomeServerError, false},
		{304, outcomeServerError, false},
		{307, outcomeServerError, false},
		{100, outcomeServerError, false},
		{199, outcomeServerError, false},
		{0, outcomeServerError, false},
		{600, outcomeServerError, false},
	}
	for _, tc := range cases {
		o, relay := classifyStatus(tc.code)
		if o != tc.outcome || relay != tc.relay {
			t.Errorf("classifyStatus(%d) = %s, %v; want %s, %v", tc.code, o, relay, tc.outcome, tc.relay)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return at.Add(d).Format(http.TimeFormat) }
	cases := []struct {
		name string
		v    string
		want time.Duration
		skip string
	}{
		{"empty", "", 0, ""},
		{"seconds", "120", 120 * time.Second, ""},
		{"one second", "1", time.Second, ""},
		{"zero", "0", 0, ""},
		{"leading zeros", "007", 7 * time.Second, ""},
		{"spaces", " 30 ", 30 * time.Second, ""},
		{"tab and newline", "\t5\r\n", 5 * time.Second, ""},
		{"plus sign", "+5", 5 * time.Second, ""}, // strconv.Atoi takes the sign
		{"negative", "-5", 0, ""},
		{"fraction", "1.5", 0, ""},
		{"garbage", "soon", 0, ""},
		{"number then garbage", "5s", 0, ""},
		{"only spaces", "   ", 0, ""},
		{"too large for an int", "99999999999999999999999", 0, ""},
		{"HTTP date in the future", date(90 * time.Second), 90 * time.Second, ""},
		{"HTTP date now", date(0), 0, ""},
		{"HTTP date in the past", date(-time.Hour), 0, ""},
		{"RFC 850 date", at.Add(time.Minute).Format(time.RFC850), time.Minute, ""},
		{"ANSI C date", at.Add(2 * time.Minute).Format(time.ANSIC), 2 * time.Minute, ""},
		{"not GMT", at.Add(time.Minute).Format(time.RFC1123Z), 0, ""},
		{"date with garbage", date(time.Minute) + " x", 0, ""},
		{"seconds overflowing a Duration", "10000000000", 365 * 24 * time.Hour, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			if got := parseRetryAfter(tc.v, at); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

// TestParseRetryAfterNeverNegative: whatever the header, the delay is not
// negative.
// TestRetryAfterOf: Retry-After-Ms comes first, as the SDKs read it; one
// that is not a positive number leaves Retry-After to say.
func TestRetryAfterOf(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		ms, secs string
		want     time.Duration
	}{
		{"1500", "", 1500 * time.Millisecond},
		{" 250.5 ", "9", 250500 * time.Microsecond},
		{"", "9", 9 * time.Second},
		{"soon", "9", 9 * time.Second},
		{"-5", "9", 9 * time.Second},
		{"NaN", "", 0},
		{"1e300", "", 365 * 24 * time.Hour},
	} {
		h := http.Header{}
		if c.ms != "" {
			h.Set("Retry-After-Ms", c.ms)
		}
		if c.secs != "" {
			h.Set("Retry-After", c.secs)
		}
		if got := retryAfterOf(h, at); got != c.want {
			t.Errorf("Retry-After-Ms %q, Retry-After %q: %v, want %v", c.ms, c.secs, got, c.want)
		}
	}
}

func TestParseRetryAfterNeverNegative(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, v := range []string{"-1", "-9223372036854775808", "0", "9223372036", at.Add(-24 * time.Hour).Format(http.TimeFormat)} {
		if got := parseRetryAfter(v, at); got < 0 {
			t.Errorf("parseRetryAfter(%q) = %v", v, got)
		}
	}
}

// setHeader writes names as given, so a name that is not canonical would
// be a header that Header.Get never finds.
func TestRouterHeaderNamesAreCanonical(t *testing.T) {
	for _, name := range []string{hdrModel, hdrProvider, hdrRoute, hdrAttempts, hdrCache, hdrBudget, hdrQueryType} {
		if c := http.CanonicalHeaderKey(name); c != name {
			t.Errorf("%q is not canonical (%q)", name, c)
		}
	}
}

// readLimited reads request and response bodies: whatever the declared
// length says, it returns exactly the bytes sent, refuses more than limit,
// and passes a reader's error on.
func TestReadLimited(t *testing.T) {
	big := strings.Repeat("x", 10000)
	broken := errors.New("connection reset")
	for _, tc := range []struct {
		name     string
		r        io.Reader
		declared int64
		limit    int64
		want     string
		err      error
	}{
		{"declared", strings.NewReader("hello"), 5, 100, "hello", nil},
		{"empty", strings.NewReader(""), 0, 100, "", nil},
		{"unknown length, grows", strings.NewReader(big), -1, 1 << 20, big, nil},
		{"one byte at a time", iotest.OneByteReader(strings.NewReader(big)), -1, 1 << 20, big, nil},
		{"declared too short", strings.NewReader(big), 10, 1 << 20, big, nil},
		{"declared too long", strings.NewReader("hello"), 50, 100, "hello", nil},
		{"at the limit", strings.NewReader(big), -1, 10000, big, nil},
		{"over the limit", strings.NewReader(big), -1, 9999, "", &http.MaxBytesError{}},
		{"over the limit, declared short", strings.NewReader(big), 10, 9999, "", &http.MaxBytesError{}},
		{"declared over the limit", strings.NewReader(big), 10000, 9999, "", &http.MaxBytesError{}},
		{"reader error", io.MultiReader(strings.NewReader("par"), iotest.ErrReader(broken)), 10, 100, "", broken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readLimited(tc.r, tc.declared, tc.limit, false)
			var tooLarge *http.MaxBytesError
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.err != nil && errors.As(tc.err, &tooLarge):
				if !errors.As(err, &tooLarge) || tooLarge.Limit != tc.limit {
					t.Fatalf("error %v, want MaxBytesError{%d}", err, tc.limit)
				}
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Fatalf("error %v, want %v", err, tc.err)
			case string(got) != tc.want:
				t.Fatalf("got %d bytes, want %d", len(got), len(tc.want))
			}
		})
	}
	rd := strings.NewReader("")
	if n := testing.AllocsPerRun(100, func() { rd.Reset("hello"); _, _ = readLimited(rd, 5, 100, true) }); n > 1 {
		t.Errorf("%v allocations for a body of declared length, want 1", n)
	}
	// a peer that declares 8 MB and sends 5 bytes holds a small buffer,
	// not the 8 MB it announced
	got, err := readLimited(strings.NewReader("hello"), 8<<20, 16<<20, false)
	if err != nil || string(got) != "hello" || cap(got) > preallocMax {
		t.Errorf("declared 8 MB, sent 5 bytes: %q %v, buffer of %d bytes, want at most %d", got, err, cap(got), preallocMax)
	}
}

// TestReadLimitedAtDeclared: with atDeclared, a body is whole at its
// declared length, whatever would follow (here an error: the stream of a
// full-duplex HTTP/2 client, still open); without it, to its end.
func TestReadLimitedAtDeclared(t *testing.T) {
	open := func() io.Reader { return io.MultiReader(strings.NewReader("hello"), iotest.ErrReader(errBoom)) }
	if got, err := readLimited(open(), 5, 100, true); err != nil || string(got) != "hello" {
		t.Errorf("at its declared length: %q, %v", got, err)
	}
	if _, err := readLimited(open(), 5, 100, false); !errors.Is(err, errBoom) {
		t.Errorf("to its end: %v, want the reader's error", err)
	}
}

// TestUpstreamHeaderDropsAccountSteering: the headers that pick which of
// the operator's provider accounts, organizations or projects pays never
// go upstream from a client, and no forward_header may open them, in any
// spelling.
func TestUpstreamHeaderDropsAccountSteering(t *testing.T) {
	client := http.Header{"Openai-Organization": {"org-other"}, "Openai-Project": {"proj-other"}, "X-Goog-User-Project": {"other-project"}}
	got := upstreamHeader(client, forwardedHeaders(nil), &provider{headers: http.Header{}}, false)
	for f := range client {
		if v, ok := got[f]; ok {
			t.Errorf("%s: %q forwarded upstream", f, v)
		}
		for _, spelling := range []string{f, strings.ToLower(f), strings.ToUpper(f)} {
			if unforwardable(spelling) == "" {
				t.Errorf("forward_header %s is allowed", spelling)
			}
		}
	}
}

// TestUnforwardable: what no forward_header may open (credentials,
// account steering, hop-by-hop and body headers, the router's own,
// another gateway's controls), in any case; and what it may.
func TestUnforwardable(t *testing.T) {
	for _, f := range []string{
		"Authorization", "proxy-authorization", "COOKIE", "x-api-key", "Api-Key",
		"openai-organization", "OpenAI-Project", "x-goog-user-project",
		"Connection", "keep-alive", "te", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection",
		"host", "content-length", "Content-Type", "content-encoding", "Accept-Encoding",
		"x-llm-route", "X-Query-Type",
		"X-Portkey-Config", "x-litellm-key", "helicone-target-url", "cf-aig-authorization",
		"bad name", "", "X-Team:",
	} {
		if unforwardable(f) == "" {
			t.Errorf("forward_header %q is allowed", f)
		}
	}
	for _, f := range []string{"X-Custom", "anthropic-beta", "OpenAI-Beta", "X-Portkeyish", "Accept", "x-stainless-lang"} {
		if why := unforwardable(f); why != "" {
			t.Errorf("forward_header %q refused: %s", f, why)
		}
	}
}

// TestUpstreamHeaderAsCloned holds upstreamHeader, which looks up only the
// allowed client headers and shares their values, to a copy of all of
// them with the others deleted: only the allowlist reaches the provider,
// less what the client's Connection header calls hop-by-hop, then the
// provider's headers, its key and the body's type.
func TestUpstreamHeaderAsCloned(t *testing.T) {
	cloned := func(client http.Header, forward []string, p *provider, stream bool) http.Header {
		h := client.Clone()
		for f := range h {
			if !slices.Contains(forward, f) {
				delete(h, f)
			}
		}
		for _, v := range client["Connection"] {
			for f := range strings.SplitSeq(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					h.Del(f)
				}
			}
		}
		for f, v := range p.headers {
			h[f] = v
		}
		if p.key != "" {
			h.Set("Authorization", "Bearer "+p.key)
		}
		h.Set("Content-Type", "application/json")
		if stream {
			h.Set("Accept", "text/event-stream")
		}
		return h
	}
	withKey := &provider{key: "sk-test-key-0001", auth: []string{"Bearer sk-test-key-0001"},
		headers: http.Header{"X-Portkey-Config": {"provider's own"}, "Api-Key": {"azure"}, "X-Team": {"from the provider"}}}
	noKey := &provider{headers: http.Header{}}
	clients := []http.Header{
		{},
		{"Content-Type": {"text/plain"}, "Accept": {"*/*"}, "User-Agent": {"sdk/1.0"}, "Content-Length": {"12"}},
		{"Authorization": {"Bearer client"}, "Cookie": {"a=b"}, "X-Api-Key": {"k"}, "Api-Key": {"k"}, "Proxy-Authorization": {"p"},
			"Openai-Organization": {"org"}, "Openai-Project": {"proj"}, "X-Goog-User-Project": {"other-project"}, "Accept-Encoding": {"gzip"}, "X-Llm-Route": {"r"}, "X-Query-Type": {"q"}},
		{"Connection": {"keep-alive, x-hop-secret", " Upgrade ,", "x-request-id"}, "X-Hop-Secret": {"s"}, "Upgrade": {"h2c"}, "Keep-Alive": {"timeout=5"},
			"Te": {"trailers"}, "Trailer": {"X"}, "Transfer-Encoding": {"chunked"}, "Proxy-Connection": {"close"}, "Proxy-Authenticate": {"x"},
			"X-Request-Id": {"named by Connection"}, "X-Custom": {"kept"}},
		{"X-Portkey-Config": {"{}"}, "X-Litellm-Key": {"k"}, "Helicone-Target-Url": {"u"}, "Cf-Aig-Authorization": {"a"}, "X-Portkeyish": {"dropped"},
			"X-Team": {"client's"}, "X-Request-Id": {"req-1", "req-2"}, "X-Empty": nil, "non canonical key": {"dropped"}},
		{"Anthropic-Beta": {"context-1m-2025-08-07"}, "Openai-Beta": {"assistants=v2"}, "X-Stainless-Lang": {"python"}, "X-Custom": {"c"},
			"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, "Tracestate": {"k=v"}, "X-Client-Request-Id": {"cr-1"}, "User-Agent": {"OpenAI/Python 1.0"}, "X-Request-Id": {"req-9"}},
	}
	for _, forward := range [][]string{forwardedHeaders(nil), forwardedHeaders([]string{"x-custom", "X-Team", "accept"})} {
		for i, client := range clients {
			for _, p := range []*provider{withKey, noKey} {
				for _, stream := range []bool{false, true} {
					before := client.Clone()
					got, want := upstreamHeader(client, forward, p, stream), cloned(client, forward, p, stream)
					if !reflect.DeepEqual(got, want) {
						t.Errorf("forward %v, client %d, key %v, stream %v:\n got %v\nwant %v", forward, i, p.key != "", stream, got, want)
					}
					if !reflect.DeepEqual(client, before) {
						t.Errorf("client %d: upstreamHeader changed the client's header: %v", i, client)
					}
					if v := got["X-Request-Id"]; len(v) > 0 {
						got.Add("X-Request-Id", "added")
						if !reflect.DeepEqual(client, before) {
							t.Errorf("client %d: an Add upstream wrote into the client's header: %v", i, client)
						}
					}
				}
			}
		}
	}
	// the defaults, and nothing else of the client's
	got := upstreamHeader(clients[len(clients)-1], forwardedHeaders(nil), noKey, false)
	for _, f := range []string{"Anthropic-Beta", "Openai-Beta", "X-Stainless-Lang", "X-Custom"} {
		if v, ok := got[f]; ok {
			t.Errorf("%s: %q forwarded by default", f, v)
		}
	}
	for _, f := range defaultForwardedHeaders {
		if len(got[f]) != 1 {
			t.Errorf("%s not forwarded by default: %v", f, got)
		}
	}
}

// TestForwardedHeadersKeyed: the fields forward_header opens are part of
// the cache key, once each, after the key_header fields (which keep their
// spelling, and so the keys of a config without forward_header); the ones
// forwarded by default are not.
func TestForwardedHeadersKeyed(t *testing.T) {
	cases := []struct {
		keyed, forwarded, want []string
	}{
		{nil, nil, nil},
		{[]string{"x-team"}, nil, []string{"x-team"}},
		{nil, []string{"x-custom", "User-Agent", "x-request-id"}, []string{"X-Custom"}},
		{[]string{"x-team", "X-Lang"}, []string{"X-Team", "x-custom", "X-CUSTOM", "x-lang"}, []string{"x-team", "X-Lang", "X-Custom"}},
	}
	for _, tc := range cases {
		keyed := slices.Clone(tc.keyed)
		if got := keyHeaders(keyed, tc.forwarded); !slices.Equal(got, tc.want) {
			t.Errorf("keyHeaders(%q, %q) = %q, want %q", tc.keyed, tc.forwarded, got, tc.want)
		}
		if !slices.Equal(keyed, tc.keyed) {
			t.Errorf("keyHeaders changed the config's key_header: %q", keyed)
		}
	}
}

// TestForwardHeadersValidated: a JSON config (no Caddyfile to refuse it
// first) that opens a header never forwarded does not load.
func TestForwardHeadersValidated(t *testing.T) {
	r := func(forward ...string) *Router {
		return &Router{Providers: []*Provider{{Name: "p"}}, Models: []*Model{{Name: "a"}}, ForwardHeaders: forward}
	}
	if err := r("X-Custom", "anthropic-beta").validate(); err != nil {
		t.Errorf("forward_headers X-Custom, anthropic-beta: %v", err)
	}
	for _, f := range []string{"cookie", "X-Goog-User-Project", "Helicone-Target-Url", "Content-Length"} {
		if err := r("X-Custom", f).validate(); err == nil || !strings.Contains(err.Error(), "forward_header") || !strings.Contains(err.Error(), f) {
			t.Errorf("forward_headers %s: %v, want an error naming it", f, err)
		}
	}
}
