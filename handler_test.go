package llmrouter

import (
	"errors"
	"io"
	"net/http"
	"reflect"
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
// go upstream from a client.
func TestUpstreamHeaderDropsAccountSteering(t *testing.T) {
	client := http.Header{"Openai-Organization": {"org-other"}, "Openai-Project": {"proj-other"}, "X-Goog-User-Project": {"other-project"}}
	got := upstreamHeader(client, &provider{headers: http.Header{}}, false)
	for f := range client {
		if v, ok := got[f]; ok {
			t.Errorf("%s: %q forwarded upstream", f, v)
		}
	}
}

// TestUpstreamHeaderAsCloned holds upstreamHeader, which copies only the
// client headers it keeps and shares their values, to what the copy of all
// of them with the others deleted (as it was built before) sends.
func TestUpstreamHeaderAsCloned(t *testing.T) {
	cloned := func(client http.Header, p *provider, stream bool) http.Header {
		h := client.Clone()
		for _, v := range h["Connection"] {
			for f := range strings.SplitSeq(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					h.Del(f)
				}
			}
		}
		for _, f := range hopHeaders {
			delete(h, f)
		}
		for _, f := range droppedRequestHeaders {
			delete(h, f)
		}
		for f := range h {
			for _, prefix := range gatewayControlPrefixes {
				if strings.HasPrefix(f, prefix) {
					delete(h, f)
					break
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
		{"Connection": {"keep-alive, x-hop-secret", " Upgrade ,"}, "X-Hop-Secret": {"s"}, "Upgrade": {"h2c"}, "Keep-Alive": {"timeout=5"},
			"Te": {"trailers"}, "Trailer": {"X"}, "Transfer-Encoding": {"chunked"}, "Proxy-Connection": {"close"}, "Proxy-Authenticate": {"x"}},
		{"X-Portkey-Config": {"{}"}, "X-Litellm-Key": {"k"}, "Helicone-Target-Url": {"u"}, "Cf-Aig-Authorization": {"a"}, "X-Portkeyish": {"kept"},
			"X-Team": {"client's"}, "X-Request-Id": {"req-1", "req-2"}, "X-Empty": nil, "non canonical key": {"kept as is"}},
	}
	for i, client := range clients {
		for _, p := range []*provider{withKey, noKey} {
			for _, stream := range []bool{false, true} {
				before := client.Clone()
				got, want := upstreamHeader(client, p, stream), cloned(client, p, stream)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("client %d, key %v, stream %v:\n got %v\nwant %v", i, p.key != "", stream, got, want)
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
