package semantic

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Pair is one labelled pair of questions for calibration.
type Pair struct {
	// A and B are the two questions.
	A, B string
	// Same says whether one's answer is right for the other.
	Same bool
	// Similarity is the cosine similarity of their embeddings, filled in
	// by the caller (ParsePairs leaves it zero).
	Similarity float64
}

// Row is what a semantic cache would have done with the pairs at one
// threshold.
type Row struct {
	// Threshold is the similarity from which a pair is a candidate.
	Threshold float64
	// Served counts the pairs at or above the threshold that every guard
	// passed: the hits a cache would serve.
	Served int
	// Right and Wrong split Served by the pairs' label (same, different).
	Right, Wrong int
	// Precision is Right/Served, NaN when nothing is served.
	Precision float64
	// Recall is Right over all pairs labelled same, NaN when there are
	// none.
	Recall float64
	// GuardBlocked counts the pairs at or above the threshold that a guard
	// refused.
	GuardBlocked int
	// FalseBlocked counts those of GuardBlocked labelled different: the
	// wrong answers the guards prevented.
	FalseBlocked int
}

// GuardCount is how many pairs one guard refused, by label.
type GuardCount struct {
	// Guard is the guard that failed first (see Check).
	Guard Guard
	// Same counts refused pairs labelled same (hits lost), Different
	// those labelled different (wrong answers prevented).
	Same, Different int
}

// Report is the result of Calibrate.
type Report struct {
	// Pairs counts all pairs, Same and Different them by label.
	Pairs, Same, Different int
	// Target is the precision asked for.
	Target float64
	// Rows has one row per threshold, in ascending order.
	Rows []Row
	// Blocked has, for each guard in the order of Guards, the pairs it
	// refused at or above the lowest threshold; nil without thresholds.
	Blocked []GuardCount
	// Lowest is the lowest threshold at which the target is reached at
	// every threshold from it up (see Calibrate); NaN when Reached is
	// false.
	Lowest float64
	// Reached says whether some threshold is Lowest.
	Reached bool
}

// DefaultThresholds returns 0.80, 0.81, …, 0.99. Each is i/100, the float
// nearest the decimal, rather than a sum of steps that would drift off it
// (0.80+0.01+… is not 0.83) and print or compare wrongly.
func DefaultThresholds() []float64 {
	ts := make([]float64, 0, 20)
	for i := 80; i <= 99; i++ {
		ts = append(ts, float64(i)/100)
	}
	return ts
}

// Calibrate measures a semantic cache on labelled pairs at each threshold:
// a pair is served when its similarity is at least the threshold and the
// guards pass (Check on both questions' Extract). The thresholds are
// sorted, NaNs and duplicates dropped.
//
// Precision need not fall as the threshold falls: a band of similarities
// can hold more wrong pairs than the band below it. So Lowest is not the
// lowest threshold reaching targetPrecision but the lowest threshold t
// that serves something and from which every threshold in the list up
// reaches it; one that serves nothing cannot be wrong and does not count
// against t. So raising the threshold from Lowest, to any value in the
// list, never drops below the target on these pairs.
func Calibrate(pairs []Pair, thresholds []float64, targetPrecision float64) Report {
	ts := slices.DeleteFunc(slices.Clone(thresholds), math.IsNaN)
	slices.Sort(ts)
	ts = slices.Compact(ts)

	r := Report{Pairs: len(pairs), Target: targetPrecision, Lowest: math.NaN()}
	blocked := make([]Guard, len(pairs)) // "" when the guards pass
	for i, p := range pairs {
		if p.Same {
			r.Same++
		} else {
			r.Different++
		}
		if g, ok := Check(Extract(p.A), Extract(p.B)); !ok {
			blocked[i] = g
		}
	}

	r.Rows = make([]Row, len(ts))
	for i, t := range ts {
		row := Row{Threshold: t}
		for j, p := range pairs {
			switch {
			case !(p.Similarity >= t):
			case blocked[j] != "":
				row.GuardBlocked++
				if !p.Same {
					row.FalseBlocked++
				}
			case p.Same:
				row.Right++
			default:
				row.Wrong++
			}
		}
		row.Served = row.Right + row.Wrong
		row.Precision, row.Recall = ratio(row.Right, row.Served), ratio(row.Right, r.Same)
		r.Rows[i] = row
	}

	// from the top down: the last threshold serving something before
	// the first that misses the target
	for i := len(r.Rows) - 1; i >= 0; i-- {
		row := r.Rows[i]
		if row.Served == 0 {
			continue
		}
		if row.Precision < targetPrecision {
			break
		}
		r.Lowest, r.Reached = row.Threshold, true
	}

	if len(ts) > 0 {
		r.Blocked = make([]GuardCount, len(Guards))
		for i, g := range Guards {
			r.Blocked[i].Guard = g
		}
		for j, p := range pairs {
			if blocked[j] == "" || !(p.Similarity >= ts[0]) {
				continue
			}
			c := &r.Blocked[slices.Index(Guards, blocked[j])]
			if p.Same {
				c.Same++
			} else {
				c.Different++
			}
		}
	}
	return r
}

func ratio(n, d int) float64 {
	if d == 0 {
		return math.NaN()
	}
	return float64(n) / float64(d)
}

// Write prints the report as a plain-text table with fixed widths and
// fixed decimals (thresholds with two, or up to four when needed;
// precision and recall with three, "-" when undefined), so that its
// output can be compared whole in tests and diffs.
func (r Report) Write(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "pairs: %d (%d same, %d different)", r.Pairs, r.Same, r.Different)
	if len(r.Rows) == 0 {
		b.WriteString("\nno thresholds\n")
		_, err := w.Write(b.Bytes())
		return err
	}
	fmt.Fprintf(&b, "; guards blocked %d pairs at or above %s\n", r.Rows[0].GuardBlocked, decimal(r.Rows[0].Threshold))
	b.WriteString("blocked by guard (same/different):")
	for i, c := range r.Blocked {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s %d/%d", c.Guard, c.Same, c.Different)
	}
	b.WriteString("\n\nthreshold  served  right  wrong  precision  recall  guard-blocked  false-blocked\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "%-9s  %6d  %5d  %5d  %9s  %6s  %13d  %13d\n",
			decimal(row.Threshold), row.Served, row.Right, row.Wrong,
			fraction(row.Precision), fraction(row.Recall), row.GuardBlocked, row.FalseBlocked)
	}
	b.WriteString("\nserved: similarity >= threshold and every guard passes; right/wrong: of them, labelled same/different\n")
	b.WriteString("guard-blocked: similarity >= threshold but a guard refused; false-blocked: of them, labelled different\n")
	if r.Reached {
		fmt.Fprintf(&b, "lowest threshold with precision >= %s at every threshold above it: %s\n", decimal(r.Target), decimal(r.Lowest))
	} else {
		fmt.Fprintf(&b, "no threshold has precision >= %s at every threshold above it\n", decimal(r.Target))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// decimal formats v with two decimals, or up to four when two would not
// give it back.
func decimal(v float64) string {
	for d := 2; d < 4; d++ {
		s := strconv.FormatFloat(v, 'f', d, 64)
		if p, _ := strconv.ParseFloat(s, 64); p == v {
			return s
		}
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

func fraction(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// ParsePairs reads labelled pairs, one JSON object a line:
//
//	{"a": "Where is order 123?", "b": "Where's my order 123?", "same": true}
//
// Blank lines and lines starting with # (after white space) are skipped. It is strict, since a
// mislabelled or misspelt pair would quietly skew a calibration: "a", "b"
// (non-empty strings) and "same" (a boolean) must each be there once and
// nothing else may, keys matched exactly; an error names the line.
func ParsePairs(r io.Reader) ([]Pair, error) {
	var pairs []Pair
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			p, perr := parsePair(t)
			if perr != nil {
				return nil, fmt.Errorf("line %d: %w", n, perr)
			}
			pairs = append(pairs, p)
		}
		if err == io.EOF {
			return pairs, nil
		}
	}
}

func parsePair(line []byte) (Pair, error) {
	var p Pair
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil {
		return p, err
	} else if tok != json.Delim('{') {
		return p, errors.New("not a JSON object")
	}
	var a, b, same bool // seen
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return p, err
		}
		key := tok.(string) // an object's keys are strings
		switch key {
		case "a":
			err = field(dec, key, &a, &p.A)
		case "b":
			err = field(dec, key, &b, &p.B)
		case "same":
			err = field(dec, key, &same, &p.Same)
		default:
			err = fmt.Errorf("unknown field %q", key)
		}
		if err != nil {
			return p, err
		}
	}
	if _, err := dec.Token(); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return p, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return p, errors.New("more after the JSON object")
	}
	var missing []string
	for _, f := range []struct {
		seen bool
		name string
	}{{a, `"a"`}, {b, `"b"`}, {same, `"same"`}} {
		if !f.seen {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return p, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return p, nil
}

// field decodes the value of key into v, once, and not from null (which
// encoding/json would take as leaving v alone) nor, for a question, an
// empty string.
func field[T string | bool](dec *json.Decoder, key string, seen *bool, v *T) error {
	if *seen {
		return fmt.Errorf("field %q twice", key)
	}
	*seen = true
	var x *T
	if err := dec.Decode(&x); err != nil {
		return fmt.Errorf("field %q: %w", key, err)
	}
	if x == nil {
		return fmt.Errorf("field %q: null", key)
	}
	if s, ok := any(*x).(string); ok && strings.TrimSpace(s) == "" {
		return fmt.Errorf("field %q: empty", key)
	}
	*v = *x
	return nil
}
