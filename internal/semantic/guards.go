package semantic

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Guard names one exact check of Check; its value is a stable metric label.
type Guard string

// The guards, in the order Check applies them.
const (
	// GuardEmail: both questions name the same e-mail addresses in the same
	// order of first mention ("from alice@… to bob@…" is not "from bob@…
	// to alice@…"), compared case-insensitively.
	GuardEmail Guard = "email"
	// GuardURL: both questions name the same URLs in the same order of
	// first mention (http://, https:// and
	// www. forms; scheme and host compared case-insensitively, the rest
	// exactly; no path is the same as "/"). Schemes are not guessed:
	// "www.x.com", "http://www.x.com" and "https://www.x.com" differ.
	GuardURL Guard = "url"
	// GuardCode: both questions name the same codes in the same order of
	// first mention ("from seat A12 to B34" is not "from B34 to A12"),
	// tokens with at least one letter and one digit ("A123", "SKU-99X",
	// "2FA", "iphone15"), compared case-insensitively.
	GuardCode Guard = "code"
	// GuardNumber: both questions name the same numbers in the same order
	// (of first mention: "2 to the power of 10" is not "10 to the power of
	// 2"), tokens of digits with separators between digits ("123", "1.5",
	// "12:30", "2024-05-01"), a digit being any Unicode number character
	// (superscripts, fractions, Roman numerals: "10²" is not "10³");
	// "1,000", "1,000,000.5" and "1.000.000" lose their thousands
	// separators, so "1,000" is "1000", and so do numbers grouped by an
	// apostrophe ("1'000'000", Swiss) or a no-break, narrow no-break, thin
	// or figure space ("1 000 000", as software writes French or Russian
	// numbers). Digits grouped by ordinary spaces are one number as written
	// ("1 000 000", "0912 345 678"), never groups that repeats would then
	// drop: "1 000 000" is not "1 000". A single "1.000" is
	// left alone, since it is one thousand in Vietnamese and one in
	// English, and so is "0,125", a decimal. A leading decimal point is
	// kept as a zero: ".5" is "0.5", never "5"; a minus sign is kept, also
	// written as an en dash or a full-width hyphen-minus ("–5" is "-5").
	// Numbers spelt in words are numbers too, as their digits (English
	// zero to twenty, the tens, dozen, hundred, thousand, million,
	// billion; Vietnamese hai to mười, trăm, nghìn, ngàn, triệu, tỷ, tỉ):
	// "two items" is never "three items", and "ten thousand" never "ten
	// million". "one" and "một" are not read, being as often "a" or a
	// pronoun. Words are read one by one: "twenty-five" is 20 and 5, so
	// it is not "25", a hit lost rather than a wrong one. So are the parts
	// of a date named in words, as themselves: the days of the week, the
	// months but May (as often the verb), today, tomorrow, yesterday and
	// tonight ("open on Sunday" is never "open on Monday").
	GuardNumber Guard = "number"
	// GuardNegation: both questions hold the same number of negation words
	// (see Facts.Negations for why a count and not presence or parity).
	// Words are matched whole, case-insensitively, after NFC normalisation;
	// a hyphenated or underscored word is matched part by part
	// ("not-so-good" holds "not").
	//
	// English: not, no, never, none, nothing, nobody, noone, nowhere,
	// neither, nor, cannot, without; every word ending in n't or n’t
	// (don't, doesn't, didn't, isn't, aren't, wasn't, weren't, won't,
	// wouldn't, can't, couldn't, shouldn't, haven't, hasn't, hadn't,
	// mustn't, needn't, ain't, …), also with ‘, ʼ, ´, ` or ′ for the
	// apostrophe, as other keyboards and editors type it (didn´t); and
	// without the apostrophe: dont, doesnt, didnt, isnt, arent, wasnt,
	// werent, wont, wouldnt, cant, couldnt, shouldnt, havent, hasnt,
	// hadnt, mustnt, neednt, aint.
	//
	// Vietnamese: không, chưa, chẳng, chả, đừng, chớ, hông, ko, k (a token
	// of its own only: "5k" is a code, "K-pop" no negation), khong (the
	// other reading, khống, is rare). "không phải" is counted through
	// "không". Left out because, typed without diacritics, they are as
	// often another common word: chua (chưa, but also chua "sour" and
	// chùa "pagoda"), dung (đừng, but also dùng "use" and dũng), cha (chả,
	// but also cha "father"), chang (chẳng / chàng), cho (chớ / cho
	// "give"), hong (hông / hồng "pink"). Also left out: hổng ("lỗ hổng",
	// a security hole) and đâu (mostly "where").
	//
	// The sentence-final question particles of "có … không?" and "đã …
	// chưa?" are counted too: telling them from a negation needs a
	// parser. Two questions asked in the same form still match; a
	// paraphrase asked in another form misses, which costs a call, not a
	// wrong answer.
	GuardNegation Guard = "negation"
)

// Guards lists every guard in the order Check applies them, for metric
// labels. Do not modify it.
var Guards = []Guard{GuardEmail, GuardURL, GuardCode, GuardNumber, GuardNegation}

// Facts are what must be equal in two questions before one may be served
// the other's answer, whatever their similarity.
//
// The identifier lists hold each value once, normalised: repeating
// "order 123" does not change which order a question is about, and
// paraphrases often repeat or drop a repetition. Each list keeps the order
// of first mention, which can change the question ("from 3 to 5", "from
// seat A12 to B34", "from alice@… to bob@…"). E-mail addresses and URLs
// are taken whole, so their digits are not also numbers or codes.
type Facts struct {
	// Emails are e-mail addresses, lower-cased, in the order of their
	// first mention (as are URLs and Codes).
	Emails []string
	// URLs are URLs with scheme and host lower-cased and an empty path
	// written "/"; "www." URLs have no scheme.
	URLs []string
	// Codes are tokens of letters and digits, lower-cased.
	Codes []string
	// Numbers are digit tokens without thousands separators, with a
	// leading "-" when written with a minus sign ("-5"), and the words of
	// numberWords as it writes them ("3" for "three", "sunday"), in the
	// order of their first mention.
	Numbers []string
	// Negations counts negation words (see GuardNegation). Check compares
	// the counts, which blocks everything that comparing presence would
	// and more: a word list misfires ("hàng không" is "aviation", "chả
	// giò" a spring roll), and a misfire present in both questions would
	// hide a real negation in one of them if only presence counted
	// ("chả giò không ngon" / "chả giò ngon"). Parity is worse still:
	// "not A, not B" and "A, B" have the same parity.
	Negations int
}

// Check reports whether the answer to a question with facts a may be served
// for a question with facts b. When it may not, blocked is the first guard
// that failed, in the order email, url, code, number, negation: the most
// specific identifiers first, so the label names the most telling
// difference, and negation last, its word lists being the least exact
// evidence.
func Check(a, b Facts) (blocked Guard, ok bool) {
	switch {
	case !slices.Equal(a.Emails, b.Emails):
		return GuardEmail, false
	case !slices.Equal(a.URLs, b.URLs):
		return GuardURL, false
	case !slices.Equal(a.Codes, b.Codes):
		return GuardCode, false
	case !slices.Equal(a.Numbers, b.Numbers):
		return GuardNumber, false
	case a.Negations != b.Negations:
		return GuardNegation, false
	}
	return "", true
}

// Extract finds the facts of a question. It runs on every semantic lookup,
// so it takes one pass over the text (after an NFC normalisation, which
// Vietnamese typed on some systems needs, and which allocates only when
// the text is not already NFC) and allocates only for the facts it finds.
//
// The text is cut at white space; in each piece an http://, https:// or
// www. starts a URL that runs to the piece's end (less trailing
// punctuation), an "@" with an address on both sides is an e-mail, and the
// rest is cut into tokens of letters and digits. Inside a token, "-" and
// "_" join letters and digits ("SKU-99X"), ".", ",", ":", "/" and a
// groupSpace join digits only ("1,000", "12:30", "24/7", so a sentence's
// full stop does not), and an apostrophe joins letters ("don't") or
// digits ("1'000"). A token of digits
// is a number, one of letters and digits a code, one of letters a word
// checked against the number words (numberWords) and the negation lists.
// Bare host names ("example.com"), units and currency symbols ("$5" and
// "5€" both hold just the number 5) are not facts.
func Extract(text string) Facts {
	// QuickSpanString, unlike IsNormalString, does not allocate
	if norm.NFC.QuickSpanString(text) < len(text) {
		text = norm.NFC.String(text)
	}
	var x extractor
	for i := 0; i < len(text); {
		r, n := rune(text[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRuneInString(text[i:])
		}
		if isSpace(r) && !inNumber(text, i, r, n) {
			i += n
			continue
		}
		j := i + n
		for j < len(text) {
			r, n = rune(text[j]), 1
			if r >= utf8.RuneSelf {
				r, n = utf8.DecodeRuneInString(text[j:])
			}
			if isSpace(r) && !inNumber(text, j, r, n) {
				break
			}
			j += n
		}
		x.piece(text[i:j])
		i = j
	}
	return x.facts()
}

// groupSpace reports whether r is a space that groups a number's digits
// in thousands, as software writes numbers in French (a narrow no-break
// space: "1 000 000"), Russian (a no-break space) and typesetting (a
// thin or figure space), never between two numbers.
func groupSpace(r rune) bool {
	switch r {
	case '\u00a0', '\u2007', '\u2009', '\u202f':
		return true
	}
	return false
}

// inNumber reports whether r, the space of n bytes at text[i], groups the
// digits of one number: a groupSpace between two digits.
func inNumber(text string, i int, r rune, n int) bool {
	if !groupSpace(r) || i == 0 || i+n >= len(text) {
		return false
	}
	before, _ := utf8.DecodeLastRuneInString(text[:i])
	after, _ := decodeRune(text, i+n)
	return kindOf(before) == digit && kindOf(after) == digit
}

// extractor accumulates the facts of one text.
type extractor struct {
	f Facts
	// numAtEnd: the last piece ended with a number; joinable: no token of
	// the current piece was seen yet, and the last piece ended with a
	// number. A number that starts a piece after it continues it, grouped
	// by a space ("1 000 000", as French is often typed): one number,
	// never groups that repeats would then drop ("1 000 000" holding
	// just 1 and 000, as "1 000" does).
	numAtEnd, joinable bool
	// buf holds a lower-cased word for the negation lookup and a number
	// being normalised; fixed so that neither allocates.
	buf [32]byte
}

func (x *extractor) facts() Facts {
	// repeats dropped, first mentions kept in order: the order of two
	// identifiers can change the question as that of two numbers does
	// ("from seat A12 to B34", "from alice@… to bob@…")
	for _, s := range []*[]string{&x.f.Emails, &x.f.URLs, &x.f.Codes, &x.f.Numbers} {
		l := *s
		kept := l[:0]
		for _, v := range l {
			if !slices.Contains(kept, v) {
				kept = append(kept, v)
			}
		}
		clear(l[len(kept):])
		*s = kept
	}
	return x.f
}

// piece handles text without white space.
func (x *extractor) piece(c string) {
	x.joinable, x.numAtEnd = x.numAtEnd, false
	if p := urlStart(c); p >= 0 {
		if u, ok := normURL(c[p:]); ok {
			x.mail(c[:p], false)
			x.f.URLs = append(x.f.URLs, u)
			x.joinable = false
			return
		}
	}
	x.mail(c, true)
}

// urlStart returns where the first http://, https:// or www. in c starts,
// or -1. It must not continue a word, an address or a host name ("a@www.x",
// "xhttp://").
func urlStart(c string) int {
	for p := 0; p < len(c); p++ {
		if b := c[p] | 0x20; b != 'h' && b != 'w' {
			continue
		}
		rest := c[p:]
		if !hasPrefixFold(rest, "http://") && !hasPrefixFold(rest, "https://") && !hasPrefixFold(rest, "www.") {
			continue
		}
		if p > 0 {
			r, _ := utf8.DecodeLastRuneInString(c[:p])
			if isAlnum(r) || strings.ContainsRune("@.-_/+%", r) {
				continue
			}
		}
		return p
	}
	return -1
}

// normURL normalises a URL that runs to the end of u. A URL without a host
// ("http://", "www.") is not one.
func normURL(u string) (string, bool) {
	// trailing punctuation is the sentence's, except a ")" closing a "("
	// of the URL's own (Wikipedia's "Go_(language)")
	open, closed := strings.Count(u, "("), strings.Count(u, ")")
	for len(u) > 0 {
		r, n := utf8.DecodeLastRuneInString(u)
		if r == '/' || !(unicode.IsPunct(r) || r == '>' || r == '`' || r == '|') {
			break
		}
		if r == ')' {
			if closed <= open {
				break
			}
			closed--
		}
		u = u[:len(u)-n]
	}
	scheme := ""
	switch {
	case hasPrefixFold(u, "http://"):
		scheme = "http://"
	case hasPrefixFold(u, "https://"):
		scheme = "https://"
	}
	rest := u[len(scheme):]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	auth, tail := rest[:end], rest[end:]
	at := strings.LastIndexByte(auth, '@') + 1
	host := auth[at:]
	if host == "" || (scheme == "" && len(host) <= len("www.")) {
		return "", false
	}
	lhost := strings.ToLower(host) // no allocation when already lower
	slash := tail == "" || tail[0] != '/'
	if u[:len(scheme)] == scheme && lhost == host && !slash {
		return u, true
	}
	var b strings.Builder
	b.Grow(len(u) + 1)
	b.WriteString(scheme)
	b.WriteString(auth[:at])
	b.WriteString(lhost)
	if slash {
		b.WriteByte('/')
	}
	b.WriteString(tail)
	return b.String(), true
}

// mail takes the e-mail addresses out of c, a piece or the start of one
// (atEnd: the whole), and hands the rest to words. Each byte is looked at
// at most twice: a scan back from an "@" and one forward from it both
// stop at the next "@".
func (x *extractor) mail(c string, atEnd bool) {
	done, from := 0, 0 // c[:done] is handled; c[from:] may hold an "@"
	for {
		i := strings.IndexByte(c[from:], '@')
		if i < 0 {
			break
		}
		at := from + i
		from = at + 1
		start := at
		for start > done {
			r, n := utf8.DecodeLastRuneInString(c[done:start])
			if !localRune(r) {
				break
			}
			start -= n
		}
		for start < at && c[start] == '.' {
			start++
		}
		end := at + 1
		for end < len(c) {
			r, n := decodeRune(c, end)
			if !domainRune(r) {
				break
			}
			end += n
		}
		for end > at+1 && (c[end-1] == '.' || c[end-1] == '-') {
			end--
		}
		if start == at || !validDomain(c[at+1:end]) {
			continue
		}
		x.words(c[done:start], done == 0, false)
		x.f.Emails = append(x.f.Emails, strings.ToLower(c[start:end]))
		x.joinable = false
		done, from = end, end
	}
	x.words(c[done:], done == 0, atEnd)
}

func localRune(r rune) bool {
	return kindOf(r) != other || r == '.' || r == '_' || r == '%' || r == '+' || r == '-'
}

func domainRune(r rune) bool {
	return kindOf(r) != other || r == '.' || r == '-'
}

// validDomain wants a dot with a label on both sides, so that "meet@home"
// and "@5pm" are not addresses.
func validDomain(d string) bool {
	dot := strings.LastIndexByte(d, '.')
	return d != "" && d[0] != '.' && d[0] != '-' && dot > 0 && dot < len(d)-1
}

// kinds of rune for the tokenizer
const (
	other = iota
	letter
	digit
	mark // combining: continues a token, never starts one
)

// kindOf is small enough to inline for ASCII, the bulk of most text.
func kindOf(r rune) int {
	if r < utf8.RuneSelf {
		return int(asciiKind[r])
	}
	return kindOfSlow(r)
}

var asciiKind = func() (k [utf8.RuneSelf]uint8) {
	for c := range k {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			k[c] = letter
		case '0' <= c && c <= '9':
			k[c] = digit
		}
	}
	return k
}()

func kindOfSlow(r rune) int {
	switch {
	case unicode.IsLetter(r):
		return letter
	case unicode.IsNumber(r):
		// every number character, not only decimal digits: "10²" is not
		// "10³", nor "½ cup" "¼ cup", nor "chapter Ⅻ" "chapter Ⅸ",
		// which an embedding model may well place together
		return digit
	case unicode.IsMark(r):
		return mark
	}
	return other
}

// joins reports whether connector r, between a rune of kind prev and one of
// kind next, keeps a token going.
func joins(r rune, prev, next int) bool {
	switch r {
	case '-', '_':
		return next == letter || next == digit
	case '.', ',', ':', '/', '\u00a0', '\u2007', '\u2009', '\u202f':
		return prev == digit && next == digit
	case '\'', '’':
		// "don't", and a Swiss thousands' separator ("1'000")
		return prev == next && (prev == letter || prev == digit)
	case '‘', '´', '`', '′':
		return prev == letter && next == letter
	}
	return false
}

// apostrophe reports whether r is written for an apostrophe: the ASCII
// one, the typographic one, and what keyboards and editors put in its
// place (a left quote, a modifier letter, the acute accent of a German
// keyboard's key, a backtick, a prime): "didn´t" is a negation as
// "didn't" is.
func apostrophe(r rune) bool {
	switch r {
	case '\'', '’', '‘', 'ʼ', '´', '`', '′':
		return true
	}
	return false
}

// endsNt reports whether w is a word ending in n't, with any apostrophe,
// in any case ("don't", "DIDN’T", "isn`t").
func endsNt(w string) bool {
	if len(w) < 4 || w[len(w)-1]|0x20 != 't' {
		return false
	}
	r, n := utf8.DecodeLastRuneInString(w[:len(w)-1])
	if !apostrophe(r) {
		return false
	}
	rest := w[:len(w)-1-n]
	return len(rest) > 1 && rest[len(rest)-1]|0x20 == 'n'
}

// words cuts s into tokens and records their facts.
func (x *extractor) words(s string, atStart, atEnd bool) {
	for i := 0; i < len(s); {
		r, n := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRuneInString(s[i:])
		}
		k := kindOf(r)
		if k != letter && k != digit {
			i += n
			continue
		}
		start := i
		letters, digits, split := k == letter, k == digit, false
		prev := k
		i += n
	token:
		for i < len(s) {
			r, n = rune(s[i]), 1
			if r >= utf8.RuneSelf {
				r, n = utf8.DecodeRuneInString(s[i:])
			}
			switch k = kindOf(r); k {
			case letter, mark:
				letters, k = true, letter
			case digit:
				digits = true
			default:
				if i+n >= len(s) {
					break token
				}
				next, _ := decodeRune(s, i+n)
				if !joins(r, prev, kindOf(next)) {
					break token
				}
				split = split || r == '-' || r == '_'
				i += n
				continue
			}
			prev = k
			i += n
		}
		tok := s[start:i]
		joinable := x.joinable
		x.joinable = false
		switch {
		case digits && !letters && joinable && atStart && start == 0:
			// a group of the number that ended the last piece
			last := &x.f.Numbers[len(x.f.Numbers)-1]
			*last += " " + x.number(tok, false, false)
			x.numAtEnd = atEnd && i == len(s)
		case digits && !letters:
			before := s[:start]
			// a "." right before a number can only be a leading decimal
			// point: after a digit it would have joined the token
			point := strings.HasSuffix(before, ".")
			if point {
				before = before[:len(before)-1]
			}
			minus := strings.HasSuffix(before, "-") || strings.HasSuffix(before, "−") || dashMinus(before)
			x.f.Numbers = append(x.f.Numbers, x.number(tok, minus, point))
			x.numAtEnd = atEnd && i == len(s)
		case digits:
			x.f.Codes = append(x.f.Codes, strings.ToLower(tok))
		case split:
			x.word(tok)
		case !x.numberWord(tok):
			if x.negation(tok) {
				x.f.Negations++
			}
		}
	}
}

// dashMinus reports whether before, the text just before a number, ends
// in a dash written for a minus sign: an en dash (as word processors
// write one), a full-width or small hyphen-minus (CJK input), after
// anything but a letter or digit ("–5" is minus five, "5–7" a range).
func dashMinus(before string) bool {
	r, n := utf8.DecodeLastRuneInString(before)
	if r != '–' && r != '－' && r != '﹣' {
		return false
	}
	prev, _ := utf8.DecodeLastRuneInString(before[:len(before)-n])
	return !isAlnum(prev)
}

// number normalises a number token (see GuardNumber). A "-" before a token
// can only be a minus sign: after a letter or digit it would have joined.
// point: the token follows a leading decimal point (".5").
func (x *extractor) number(tok string, minus, point bool) string {
	var drop byte
	if !point && strings.ContainsFunc(tok, groupRune) {
		// thousands grouped by an apostrophe or a space ("1'000'000.5",
		// "1 000,5"): each written as ' for thousands to check; a token
		// grouped otherwise ("5'11") is kept as written
		if g := strings.Map(oneGroupRune, tok); thousands(g, '\'', '.') || thousands(g, '\'', ',') {
			tok, drop = g, '\''
		}
	}
	switch {
	case point, drop != 0:
	case strings.IndexByte(tok, ',') >= 0 && thousands(tok, ',', '.'):
		drop = ','
	case strings.Count(tok, ".") >= 2 && thousands(tok, '.', 0):
		drop = '.'
	}
	if drop == 0 && !minus && !point {
		return tok
	}
	b := x.buf[:0]
	if minus {
		b = append(b, '-')
	}
	if point {
		b = append(b, "0."...)
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] != drop {
			b = append(b, tok[i])
		}
	}
	return string(b)
}

// groupRune reports whether r may group a number's digits in thousands
// besides "," and ".": an apostrophe or a groupSpace.
func groupRune(r rune) bool { return r == '\'' || r == '’' || groupSpace(r) }

// oneGroupRune writes every groupRune as ', for thousands.
func oneGroupRune(r rune) rune {
	if groupRune(r) {
		return '\''
	}
	return r
}

// thousands reports whether tok is digits grouped in threes by sep
// ("1,000", "12,345,678"), with an optional decimal part after dec
// ("1,000.5"; dec 0 allows none). A leading 0 makes it a decimal ("0,125").
func thousands(tok string, sep, dec byte) bool {
	if tok[0] == '0' {
		return false
	}
	n, grouped := 0, false // digits in the current group; a sep was seen
	for i := 0; i < len(tok); {
		switch c := tok[i]; {
		case c == sep:
			if grouped && n != 3 || !grouped && (n < 1 || n > 3) {
				return false
			}
			grouped, n = true, 0
			i++
		case c == dec && dec != 0:
			if !grouped || n != 3 {
				return false
			}
			for j := i + 1; j < len(tok); {
				r, size := decodeRune(tok, j)
				if kindOf(r) != digit {
					return false
				}
				j += size
			}
			return true
		case c < utf8.RuneSelf && (c < '0' || c > '9'):
			return false // another separator
		default:
			_, size := decodeRune(tok, i)
			n++
			i += size
		}
	}
	return grouped && n == 3
}

// word counts the negation words of a token of letters joined by "-" or
// "_".
func (x *extractor) word(tok string) {
	for tok != "" {
		w := tok
		if i := strings.IndexAny(tok, "-_"); i >= 0 {
			w, tok = tok[:i], tok[i+1:]
		} else {
			tok = ""
		}
		// "k" counts only as a token of its own: "K-pop" is no negation
		if w != "" && !x.numberWord(w) && len(w) > 1 && x.negation(w) {
			x.f.Negations++
		}
	}
}

// numberWord records w as a number when it is one of numberWords: a
// number spelt in words, as the digits it stands for ("three" is "3",
// "thousand" "1000"), or a day or month named in words. Like negation, it
// turns most words away by their length and first byte before any
// lower-casing.
func (x *extractor) numberWord(w string) bool {
	c := w[0]
	if 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	if len(w) > maxNumberWord || !numberWordStart[c] {
		return false
	}
	digits, ok := numberWords[string(x.lowered(w, false))]
	if ok {
		x.f.Numbers = append(x.f.Numbers, digits)
	}
	return ok
}

// lowered is w lower-cased in the extractor's buffer, with any apostrophe
// written as ' when apostrophes is set: how numberWord and negation look a
// word up.
func (x *extractor) lowered(w string, apostrophes bool) []byte {
	b := x.buf[:0]
	for i := 0; i < len(w); {
		r, n := decodeRune(w, i)
		i += n
		switch {
		case apostrophes && apostrophe(r):
			r = '\''
		case 'A' <= r && r <= 'Z':
			r += 'a' - 'A'
		case r >= utf8.RuneSelf:
			r = unicode.ToLower(r)
		}
		b = utf8.AppendRune(b, r)
	}
	return b
}

// numberWords are the numbers spelt in words that GuardNumber reads, as
// their digits. "one" and "một" are left out: as often "a" or a pronoun
// ("which one") as a count, and a count of one differs from any other
// count in the list of numbers all the same ("one item" / "two items").
var numberWords = map[string]string{
	"zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
	"eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
	"fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
	"nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
	"seventy": "70", "eighty": "80", "ninety": "90", "dozen": "12", "hundred": "100",
	"thousand": "1000", "million": "1000000", "billion": "1000000000",
	"hai": "2", "ba": "3", "bốn": "4", "năm": "5", "sáu": "6", "bảy": "7", "tám": "8", "chín": "9",
	"mười": "10", "trăm": "100", "nghìn": "1000", "ngàn": "1000", "triệu": "1000000",
	"tỷ": "1000000000", "tỉ": "1000000000",
	// the parts of a date named in words, as "2024-05-01" is a number:
	// "open on Sunday" is never "open on Monday". Kept as words, which
	// no digits write. "may" is left out, as often the verb; Vietnamese
	// names its weekdays and months with numbers (thứ hai, tháng ba).
	"monday": "monday", "tuesday": "tuesday", "wednesday": "wednesday", "thursday": "thursday",
	"friday": "friday", "saturday": "saturday", "sunday": "sunday",
	"january": "january", "february": "february", "march": "march", "april": "april",
	"june": "june", "july": "july", "august": "august", "september": "september",
	"october": "october", "november": "november", "december": "december",
	"today": "today", "tomorrow": "tomorrow", "yesterday": "yesterday", "tonight": "tonight",
}

// numberWordStart and maxNumberWord turn away, as negationStart and
// maxNegation do, the words that cannot be in numberWords.
var (
	numberWordStart [256]bool
	maxNumberWord   int
)

// negation looks a word up lower-cased, with any apostrophe as ', in a
// fixed buffer. It runs on every word, so most are turned away by their
// length and first byte before any lower-casing.
func (x *extractor) negation(w string) bool {
	if endsNt(w) {
		return true
	}
	c := w[0]
	if 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	if len(w) > maxNegation || !negationStart[c] {
		return false
	}
	b := x.lowered(w, true)
	if len(b) > maxNegation {
		return false
	}
	// a handful of words of each length: faster than hashing
	for _, n := range negationsByLen[len(b)] {
		if n == string(b) {
			return true
		}
	}
	return false
}

// englishNegations and vietnameseNegations are the lists of GuardNegation's
// doc comment, which a test holds them to; every word ending in n't counts
// besides.
var (
	englishNegations = []string{
		"not", "no", "never", "none", "nothing", "nobody", "noone", "nowhere",
		"neither", "nor", "cannot", "without",
		"dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
		"wouldnt", "cant", "couldnt", "shouldnt", "havent", "hasnt", "hadnt",
		"mustnt", "neednt", "aint",
	}
	vietnameseNegations = []string{
		"không", "chưa", "chẳng", "chả", "đừng", "chớ", "hông", "ko", "k", "khong",
	}
	negationsByLen [][]string // the words by their length in bytes
	// negationStart holds the first bytes of the words (ASCII upper case
	// is folded before looking; "Đ" and "đ" share theirs); a word starting
	// with another byte, or longer than maxNegation bytes in any case, is
	// not looked up.
	negationStart [256]bool
	maxNegation   int
)

func init() {
	all := slices.Concat(englishNegations, vietnameseNegations)
	for _, w := range all {
		negationStart[w[0]] = true
		maxNegation = max(maxNegation, len(w), len(strings.ToUpper(w)))
	}
	for w := range numberWords {
		numberWordStart[w[0]] = true
		maxNumberWord = max(maxNumberWord, len(w), len(strings.ToUpper(w)))
	}
	negationsByLen = make([][]string, maxNegation+1)
	for _, w := range all {
		negationsByLen[len(w)] = append(negationsByLen[len(w)], w)
	}
}

// hasSuffixFold reports whether s is longer than suffix and ends with it,
// ASCII case folded.
func hasSuffixFold(s, suffix string) bool {
	return len(s) > len(suffix) && hasPrefixFold(s[len(s)-len(suffix):], suffix)
}

func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// decodeRune decodes the rune at s[i]. (The hot loops spell out its ASCII
// fast path, which the compiler would not inline.)
func decodeRune(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || '\t' <= r && r <= '\r'
	}
	return unicode.IsSpace(r)
}

func isAlnum(r rune) bool {
	k := kindOf(r)
	return k == letter || k == digit
}
