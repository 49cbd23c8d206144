package semantic

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// calibrationPairs is a small labelled set whose table was worked out by
// hand (see TestReportWrite).
var calibrationPairs = []Pair{
	{"Where is order 123?", "Where's my order 123?", true, 0.95},
	{"Where is order 123?", "Where is order 456?", false, 0.97}, // number
	{"How do I reset my password?", "How can I reset my password?", true, 0.92},
	{"How do I enable 2FA?", "How do I disable 2FA?", false, 0.91},       // no guard sees it
	{"I did not receive my parcel", "I received my parcel", false, 0.89}, // negation
	{"What are your opening hours?", "When are you open?", true, 0.84},
	{"Email john@example.com the invoice", "Email jane@example.com the invoice", false, 0.93}, // email
	{"Do you ship to Vietnam?", "Can I get delivery in Vietnam?", true, 0.81},
	{"Is 1,000 the limit?", "Is 1000 the limit?", true, 0.96},
	{"Cancel my subscription", "Pause my subscription", false, 0.86},
	{"Price of SKU-99X?", "price of sku-99x", true, 0.79},       // below every threshold
	{"Ship 2,000 units", "Ship two thousand units", true, 0.90}, // number: a hit lost
}

func TestReportWrite(t *testing.T) {
	// unsorted, with a duplicate and a NaN, which Calibrate drops
	r := Calibrate(calibrationPairs, []float64{0.95, 0.80, math.NaN(), 0.99, 0.85, 0.90, 0.85}, 0.70)
	var b strings.Builder
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	// Precision is 0.714 at 0.80 but 0.600 at 0.85: 0.80 reaches the
	// target, yet the lowest safe threshold is 0.90. At 0.99 nothing is
	// served, which does not count against it.
	want := `pairs: 12 (7 same, 5 different); guards blocked 4 pairs at or above 0.80
blocked by guard (same/different): email 0/1, url 0/0, code 0/0, number 1/1, negation 0/1

threshold  served  right  wrong  precision  recall  guard-blocked  false-blocked
0.80            7      5      2      0.714   0.714              4              3
0.85            5      3      2      0.600   0.429              4              3
0.90            4      3      1      0.750   0.429              3              2
0.95            2      2      0      1.000   0.286              1              1
0.99            0      0      0          -   0.000              0              0

served: similarity >= threshold and every guard passes; right/wrong: of them, labelled same/different
guard-blocked: similarity >= threshold but a guard refused; false-blocked: of them, labelled different
lowest threshold with precision >= 0.70 at every threshold above it: 0.90
`
	if got := b.String(); got != want {
		t.Errorf("Write:\n%s\nwant:\n%s", got, want)
	}
	if !r.Reached || r.Lowest != 0.90 {
		t.Errorf("Lowest = %v, %v; want 0.90", r.Lowest, r.Reached)
	}
	if len(r.Rows) != 5 || !math.IsNaN(r.Rows[4].Precision) {
		t.Errorf("Rows = %+v", r.Rows)
	}
}

func TestCalibrateLowest(t *testing.T) {
	pairs := []Pair{
		{"a", "b", true, 0.95},
		{"c", "d", false, 0.93},
		{"e", "f", true, 0.91},
		{"g", "h", true, 0.85},
	}
	for _, c := range []struct {
		target  float64
		lowest  float64 // NaN: none
		summary string
	}{
		{0.5, 0.85, "lowest threshold with precision >= 0.50 at every threshold above it: 0.85"},
		{0.7, 0.95, "lowest threshold with precision >= 0.70 at every threshold above it: 0.95"},
		{1, 0.95, "lowest threshold with precision >= 1.00 at every threshold above it: 0.95"},
		{1.01, math.NaN(), "no threshold has precision >= 1.01 at every threshold above it"},
	} {
		r := Calibrate(pairs, []float64{0.85, 0.9, 0.95, 0.98}, c.target)
		if r.Reached == math.IsNaN(c.lowest) || r.Reached && r.Lowest != c.lowest || !r.Reached && !math.IsNaN(r.Lowest) {
			t.Errorf("target %v: Lowest = %v, %v; want %v", c.target, r.Lowest, r.Reached, c.lowest)
		}
		var b strings.Builder
		if err := r.Write(&b); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(b.String(), "\n"+c.summary+"\n") {
			t.Errorf("target %v: Write ends\n%s\nwant %s", c.target, b.String(), c.summary)
		}
	}

	// the top threshold serving something misses the target: none does
	// it at every threshold above
	r := Calibrate([]Pair{{"a", "b", false, 0.99}, {"c", "d", true, 0.5}}, DefaultThresholds(), 0.5)
	if r.Reached {
		t.Errorf("Lowest = %v with a wrong hit at the top", r.Lowest)
	}
}

func TestCalibrateEmpty(t *testing.T) {
	r := Calibrate(nil, []float64{0.9}, 0.99)
	var b strings.Builder
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := `pairs: 0 (0 same, 0 different); guards blocked 0 pairs at or above 0.90
blocked by guard (same/different): email 0/0, url 0/0, code 0/0, number 0/0, negation 0/0

threshold  served  right  wrong  precision  recall  guard-blocked  false-blocked
0.90            0      0      0          -       -              0              0

served: similarity >= threshold and every guard passes; right/wrong: of them, labelled same/different
guard-blocked: similarity >= threshold but a guard refused; false-blocked: of them, labelled different
no threshold has precision >= 0.99 at every threshold above it
`
	if got := b.String(); got != want {
		t.Errorf("Write:\n%s\nwant:\n%s", got, want)
	}

	r = Calibrate(calibrationPairs, nil, 0.99)
	b.Reset()
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	if want := "pairs: 12 (7 same, 5 different)\nno thresholds\n"; b.String() != want {
		t.Errorf("Write = %q, want %q", b.String(), want)
	}
	if r.Blocked != nil || r.Reached {
		t.Errorf("Report = %+v", r)
	}

	if err := Calibrate(nil, nil, 0.9).Write(iotest.TruncateWriter(errWriter{}, 0)); err != nil {
		t.Errorf("a writer taking nothing but reporting no error: %v", err)
	}
	if err := Calibrate(nil, nil, 0.9).Write(errWriter{}); !errors.Is(err, errWrite) {
		t.Errorf("Write = %v, want the writer's error", err)
	}
}

var errWrite = errors.New("disk full")

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestDefaultThresholds(t *testing.T) {
	ts := DefaultThresholds()
	if len(ts) != 20 {
		t.Fatalf("%d thresholds, want 20", len(ts))
	}
	for i, v := range ts {
		want, _ := strconv.ParseFloat("0."+strconv.Itoa(80+i), 64)
		if v != want {
			t.Errorf("threshold %d = %v, want %v", i, v, want)
		}
	}
	ts[0] = 0 // a fresh slice each time
	if DefaultThresholds()[0] != 0.80 {
		t.Error("DefaultThresholds shares its slice")
	}
}

func TestDecimal(t *testing.T) {
	for v, want := range map[float64]string{
		0.8: "0.80", 0.85: "0.85", 0.855: "0.855", 0.8555: "0.8555", 1.0 / 3: "0.3333", 1: "1.00",
	} {
		if got := decimal(v); got != want {
			t.Errorf("decimal(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestParsePairs(t *testing.T) {
	in := "\uFEFF# labelled by hand\n" +
		`{"a":"Where is order 123?","b":"Where's my order 123?","same":true}` + "\r\n" +
		"\n   \n" +
		`  {"same": false, "b": "Tôi đã nhận được hàng", "a": "Tôi chưa nhận được hàng"}  ` + "\n" +
		"  # indented comment\n" +
		`{"a":"caf\u00e9","b":"x","same":false}` // no final newline
	got, err := ParsePairs(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Pair{
		{A: "Where is order 123?", B: "Where's my order 123?", Same: true},
		{A: "Tôi chưa nhận được hàng", B: "Tôi đã nhận được hàng"},
		{A: "café", B: "x"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParsePairs = %+v, want %+v", got, want)
	}

	if got, err := ParsePairs(strings.NewReader("# nothing\n\n")); err != nil || len(got) != 0 {
		t.Errorf("ParsePairs of comments = %v, %v", got, err)
	}
}

func TestParsePairsErrors(t *testing.T) {
	ok := `{"a":"x","b":"y","same":true}` + "\n"
	for _, c := range []struct{ in, want string }{
		{ok + `{"a":"x","b":"y","same":true,"c":1}`, `line 2: unknown field "c"`},
		{ok + "# c\n" + `{"a":"x","b":"y","same":true,"similarity":0.9}`, `line 3: unknown field "similarity"`},
		{`{"A":"x","b":"y","same":true}`, `line 1: unknown field "A"`},
		{ok + `{"a":"x","b":"y"}`, `line 2: missing "same"`},
		{`{"same":true}`, `line 1: missing "a", "b"`},
		{`{}`, `line 1: missing "a", "b", "same"`},
		{`{"a":null,"b":"y","same":true}`, `line 1: field "a": null`},
		{`{"a":"x","b":"  ","same":true}`, `line 1: field "b": empty`},
		{`{"a":"x","a":"z","b":"y","same":true}`, `line 1: field "a" twice`},
		{`{"a":"x","b":"y","same":"yes"}`, `line 1: field "same": json: cannot unmarshal`},
		{`{"a":1,"b":"y","same":true}`, `line 1: field "a": json: cannot unmarshal`},
		{`{"a":"x","b":"y","same":true} {}`, `line 1: more after the JSON object`},
		{`{"a":"x","b":"y","same":true`, `line 1: unexpected EOF`},
		{`["x","y",true]`, `line 1: not a JSON object`},
		{`"x"`, `line 1: not a JSON object`},
		{`{"a":"x",}`, `line 1: invalid character`},
		{ok + ok + "nonsense", `line 3: invalid character`},
	} {
		got, err := ParsePairs(strings.NewReader(c.in))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("ParsePairs(%q) = %v, %v; want an error %q…", c.in, got, err, c.want)
		}
	}

	if _, err := ParsePairs(iotest.TimeoutReader(strings.NewReader(ok + ok))); err == nil || !strings.HasPrefix(err.Error(), "line ") {
		t.Errorf("a failing reader: %v", err)
	}
}
