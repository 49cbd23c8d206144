package semantic

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func TestCheck(t *testing.T) {
	nfd := norm.NFD.String
	for _, c := range []struct {
		a, b string
		want Guard // "" when the guards pass
	}{
		// numbers
		{"Where is order 123?", "Where is order 456?", GuardNumber},
		{"Where is order 123?", "where's my order #123", ""},
		{"Đơn hàng 123 của tôi đâu?", "Đơn hàng 456 của tôi đâu?", GuardNumber},
		{"Is 1,000 enough?", "is 1000 enough", ""},
		{"Send 1,000,000.50 dollars", "send 1000000.50 dollars", ""},
		{"Giá 1.000.000 đồng", "Giá 1000000 đồng", ""},
		{"Is 1,000 enough?", "Is 1.000 enough?", GuardNumber}, // 1.000 is one, to an English reader
		{"Is 1.5 enough?", "Is 15 enough?", GuardNumber},
		{"Is it cold at -5 degrees?", "Is it cold at 5 degrees?", GuardNumber},
		{"Meet at 12:30", "Meet at 12:31", GuardNumber},
		{"order 123 and order 123", "order 123", ""},      // a set, not a multiset
		{"orders 1 and 2", "orders 2 and 1", GuardNumber}, // order can matter, so it always does:
		{"What is 2 to the power of 10?", "What is 10 to the power of 2?", GuardNumber},
		{"orders 1, 2 and 1", "orders 1 and 2", ""}, // first mentions
		{"take .5 mg", "take 5 mg", GuardNumber},
		{"take .5 mg", "take 0.5 mg", ""},
		{"a change of -.5", "a change of -0.5", ""},
		{"orders 1 and 2", "order 1", GuardNumber},
		// codes
		{"enable 2FA", "turn on 2FA", ""},
		{"enable 2FA", "turn on 2fa", ""},
		{"Price of SKU-99X?", "price of sku-99x", ""},
		{"Price of SKU-99X?", "Price of SKU-98X?", GuardCode},
		{"Is the iphone15 waterproof?", "Is the iphone14 waterproof?", GuardCode},
		{"Ticket AB-12", "Ticket CD-12", GuardCode},
		{"Seat A123", "Seat A124", GuardCode},
		{"Move me from seat A12 to seat B34", "Move me from seat B34 to seat A12", GuardCode}, // as numbers: order can matter
		{"seats A12, B34 and A12", "seats A12 and B34", ""},                                   // first mentions
		// e-mail
		{"Email me at John.Doe@Example.com", "send it to john.doe@example.COM please", ""},
		{"Email me at john@example.com", "Email me at jane@example.com", GuardEmail},
		{"Email me at john@example.com", "Email me", GuardEmail},
		{"Forward from a@example.com to b@example.com", "Forward from b@example.com to a@example.com", GuardEmail},
		{"Email order 1 to john@example.com", "Email order 2 to jane@example.com", GuardEmail}, // email before number
		// URLs
		{"What is on HTTPS://Example.COM/Docs?", "explain https://example.com/Docs", ""},
		{"Is https://example.com up?", "is https://example.com/ up", ""},
		{"Open https://example.com/Docs", "Open https://example.com/docs", GuardURL},
		{"Open www.example.com/a", "Open www.example.com/b", GuardURL},
		{"Open https://example.com/order/1", "Open https://example.com/order/2", GuardURL},
		{"Redirect https://x.com/a to https://x.com/b", "Redirect https://x.com/b to https://x.com/a", GuardURL},
		// negation
		{"I did not receive my parcel", "I received my parcel", GuardNegation},
		{"I did not receive my parcel", "I never received my parcel", ""},
		{"Why can't I log in?", "Why cant I log in", ""},
		{"Why can’t I log in?", "why CAN'T i log in", ""},
		{"I don't want it", "I doesn’t want it", ""},
		{"How do I enable 2FA?", "How do I not enable 2FA?", GuardNegation},
		{"It is not red and not round", "It is red and round", GuardNegation}, // same parity
		{"a not-so-good answer", "a good answer", GuardNegation},
		{"Tôi chưa nhận được hàng", "Tôi đã nhận được hàng", GuardNegation},
		{"Tôi chưa nhận được hàng", "Tôi vẫn chưa nhận được hàng", ""},
		{"Shop KO giao hàng à", "Shop giao hàng à", GuardNegation},
		{"mình k nhận được", "mình nhận được", GuardNegation},
		{"chả giò không ngon", "chả giò ngon", GuardNegation}, // a misfire does not hide a negation
		{"Đừng gửi hàng", "Gửi hàng", GuardNegation},
		// normalisation
		{"Tôi chưa nhận được hàng", nfd("Tôi chưa nhận được hàng"), ""},
		{nfd("Tôi chưa nhận được hàng"), "Tôi đã nhận được hàng", GuardNegation},
		{nfd("KHÔNG có đơn 12"), "không có đơn 12", ""},
	} {
		got, ok := Check(Extract(c.a), Extract(c.b))
		if ok != (c.want == "") || got != c.want {
			t.Errorf("Check(%q, %q) = %q, %v; want %q", c.a, c.b, got, ok, c.want)
		}
		// symmetric
		if got2, ok2 := Check(Extract(c.b), Extract(c.a)); got2 != got || ok2 != ok {
			t.Errorf("Check(%q, %q) = %q, %v; the other way %q, %v", c.b, c.a, got2, ok2, got, ok)
		}
	}
}

func TestExtract(t *testing.T) {
	for _, c := range []struct {
		text string
		want Facts
	}{
		{"", Facts{}},
		{"How do I reset my password?", Facts{}},
		{
			"Ship 1,000,000.50 units by 12:30 on 2024-05-01, ref SKU-99X/A12; see https://Shop.Example.com/Orders?id=7. or www.Example.org!",
			Facts{
				URLs:    []string{"https://shop.example.com/Orders?id=7", "www.example.org/"},
				Codes:   []string{"sku-99x", "a12"},
				Numbers: []string{"1000000.50", "12:30", "2024-05-01"},
			},
		},
		{"(mail: Jane.Doe+tag@Example.CO.uk).", Facts{Emails: []string{"jane.doe+tag@example.co.uk"}}},
		{"a@b.com,c@d.org;x@y", Facts{Emails: []string{"a@b.com", "c@d.org"}}},
		{"mail user@localhost or @5pm", Facts{Codes: []string{"5pm"}}},
		{"ask a@www.example.com", Facts{Emails: []string{"a@www.example.com"}}},
		{"john2@example.com, not john3", Facts{Emails: []string{"john2@example.com"}, Codes: []string{"john3"}, Negations: 1}},
		{"see (https://en.wikipedia.org/wiki/Go_(language)).", Facts{URLs: []string{"https://en.wikipedia.org/wiki/Go_(language)"}}},
		{"link:https://x.com/a?b=1, then **https://x.com**", Facts{URLs: []string{"https://x.com/a?b=1", "https://x.com/"}}},
		{"https://user:Pass@Example.com/p", Facts{URLs: []string{"https://user:Pass@example.com/p"}}},
		{"http:// and www. are not URLs; xhttp://a.b is not either", Facts{Negations: 2}},
		{"order 123.", Facts{Numbers: []string{"123"}}},
		{"I ordered 3.Where is it", Facts{Numbers: []string{"3"}}},
		{"version v1.2.3 or 1.2.3", Facts{Codes: []string{"v1.2.3"}, Numbers: []string{"1.2.3"}}},
		{"open 24/7, call 090-123-4567", Facts{Numbers: []string{"24/7", "090-123-4567"}}},
		{"12,5 or 1,0000 or 1234,567", Facts{Numbers: []string{"12,5", "1,0000", "1234,567"}}},
		{"a dose of .25 or .5, the end.5", Facts{Numbers: []string{"0.25", "0.5"}}},
		{"from -5 to −7 and 3-4", Facts{Numbers: []string{"-5", "-7", "3-4"}}},
		{"–5 or －6 or ﹣7, pages 8–9, A–10", Facts{Numbers: []string{"-5", "-6", "-7", "8", "9", "10"}}},
		{"Giá 50k, vitamin K", Facts{Codes: []string{"50k"}, Negations: 1}},
		{"K-pop, k_means, no-brainer", Facts{Negations: 1}},
		{"0,125 or 0.125.000", Facts{Numbers: []string{"0,125", "0.125.000"}}},
		{"toi dung app nay, canh chua, chùa, cha, hong", Facts{}},
		{"lỗ hổng bảo mật ở đâu", Facts{}},
		{"Nobody, no one, nothing: none of it is here nor there, without a doubt", Facts{Negations: 6}},
		{"I DON'T, she won’t, they ain't, we needn't", Facts{Negations: 4}},
		{"didn´t, isn`t, donʼt, wasn‘t, can′t; rock´n´roll, `n`t`", Facts{Negations: 5}},
		{"Bạn có giao hàng không? Chưa, chẳng, chả, đừng, chớ, hông, khong", Facts{Negations: 8}},
		{"don't-care no_way", Facts{Negations: 2}},
		{"the cat's toy isn't here", Facts{Negations: 1}},
		{"Ｎｏ １２３", Facts{Numbers: []string{"１２３"}}}, // NFC leaves full-width forms alone
		{"10² or 10³, ½ cup, chapter Ⅻ", Facts{Numbers: []string{"10²", "10³", "½", "Ⅻ"}}},
		{"1\u202f000\u202f000,50 € or 1\u00a0000 or 1'000'000 or 1’000.5; 5'11, 12\u00a034, 2 100 ml, page 7\u00a0now",
			Facts{Numbers: []string{"1000000,50", "1000", "1000000", "1000.5", "5'11", "12\u00a034", "2 100", "7"}}},
		// numbers spelt in words, as their digits; "one" and "một" are not
		{"Two or THREE items, twenty-five, a dozen, one thousand; which one?", Facts{Numbers: []string{"2", "3", "20", "5", "12", "1000"}}},
		{"Tôi mua hai cái áo, ba triệu đồng, một cái", Facts{Numbers: []string{"2", "3", "1000000"}}},
		{"Open on SUNDAY in March? May I come today, not tomorrow", Facts{Numbers: []string{"sunday", "march", "today", "tomorrow"}, Negations: 1}},
		{"1 000 000 € or 1 000 €, call 0912 345 678. From 1, 000 to -5 6; page 5 of 10 (7 8)", Facts{Numbers: []string{
			"1 000 000", "1 000", "0912 345 678", "1", "000", "-5 6", "5", "10", "7 8"}}},
	} {
		if got := Extract(c.text); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Extract(%q)\n got %+v\nwant %+v", c.text, got, c.want)
		}
	}
}

// TestNegationDoc holds the word lists to GuardNegation's doc comment,
// which the README cites.
func TestNegationDoc(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "guards.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var doc string
	ast.Inspect(f, func(n ast.Node) bool {
		if v, ok := n.(*ast.ValueSpec); ok && v.Names[0].Name == "GuardNegation" {
			doc = v.Doc.Text()
		}
		return doc == ""
	})
	if doc == "" {
		t.Fatal("no doc comment on GuardNegation")
	}
	words := strings.FieldsFunc(doc, func(r rune) bool { return !unicode.IsLetter(r) })
	for _, w := range slices.Concat(englishNegations, vietnameseNegations) {
		if !slices.Contains(words, w) {
			t.Errorf("%q is not in GuardNegation's doc comment", w)
		}
		if Extract(w).Negations != 1 || Extract(strings.ToUpper(w)).Negations != 1 || Extract(norm.NFD.String(w)).Negations != 1 {
			t.Errorf("%q is not a negation", w)
		}
	}
}

func TestGuards(t *testing.T) {
	// Guards is Check's order: a pair failing every guard names each in
	// turn as the earlier ones are made to agree.
	a := Facts{Emails: []string{"a@x.io"}, URLs: []string{"www.a.io/"}, Codes: []string{"a1"}, Numbers: []string{"1"}, Negations: 1}
	var b Facts
	for _, g := range Guards {
		got, ok := Check(a, b)
		if ok || got != g {
			t.Fatalf("Check = %q, %v; want %q", got, ok, g)
		}
		switch g {
		case GuardEmail:
			b.Emails = a.Emails
		case GuardURL:
			b.URLs = a.URLs
		case GuardCode:
			b.Codes = a.Codes
		case GuardNumber:
			b.Numbers = a.Numbers
		case GuardNegation:
			b.Negations = a.Negations
		}
	}
	if got, ok := Check(a, b); !ok || got != "" {
		t.Fatalf("Check = %q, %v; want a pass", got, ok)
	}
	if got, ok := Check(Facts{Numbers: []string{}}, Facts{}); !ok {
		t.Errorf("an empty and a nil list differ: %q", got)
	}
}

func TestExtractAllocs(t *testing.T) {
	for _, q := range []string{benchEnglish, benchVietnamese} {
		if n := testing.AllocsPerRun(100, func() { Extract(q) }); n != 0 {
			t.Errorf("Extract(%q): %v allocations, want none without facts", q, n)
		}
	}
}

func FuzzExtract(f *testing.F) {
	for _, s := range []string{
		benchEnglish, benchVietnamese, benchFacts, "a@b.c@d.e", "http://(x))", "1,000.000,5",
		"-−5", "don’t", "\xff\xfe@x.com", "www.", "ｗｗｗ.x", "e\u0301-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Extract(s)
		if g, ok := Check(got, Extract(s)); !ok {
			t.Fatalf("Extract(%q) differs from itself on %q", s, g)
		}
		if utf8.ValidString(s) {
			if g, ok := Check(got, Extract(norm.NFD.String(s))); !ok {
				t.Fatalf("Extract(%q) differs from its NFD on %q", s, g)
			}
		}
		for _, l := range [][]string{got.Emails, got.URLs, got.Codes, got.Numbers} {
			sorted := slices.Clone(l)
			slices.Sort(sorted)
			if len(slices.Compact(sorted)) != len(l) {
				t.Fatalf("Extract(%q) = %+v: not distinct", s, got)
			}
			for _, v := range l {
				if v == "" {
					t.Fatalf("Extract(%q) = %+v: an empty fact", s, got)
				}
			}
		}
	})
}

// questions of about 200 characters, as a semantic lookup sees them
const (
	benchEnglish    = "Hi, I placed an order last week and the tracking page still says it is being prepared. Could you tell me when it will ship and whether I can change the delivery address to my office instead?"
	benchVietnamese = "Chào shop, tôi đã đặt hàng tuần trước mà trang theo dõi vẫn báo đang chuẩn bị. Shop cho tôi hỏi khi nào hàng được gửi đi và tôi có thể đổi địa chỉ giao sang văn phòng không?"
	benchFacts      = "Hi, my order 12345 for SKU-99X (2 units, $1,299.00) hasn't arrived. I emailed support@example.com and read https://example.com/help/shipping but didn't get an answer. Can you check?"
)

func BenchmarkExtract(b *testing.B) {
	for _, c := range []struct{ name, text string }{
		{"english", benchEnglish},
		{"vietnamese", benchVietnamese},
		{"vietnamese-nfd", norm.NFD.String(benchVietnamese)},
		{"facts", benchFacts},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.text)))
			b.ReportAllocs()
			for b.Loop() {
				Extract(c.text)
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	x, y := Extract(benchFacts), Extract(strings.Replace(benchFacts, "12345", "12346", 1))
	b.ReportAllocs()
	for b.Loop() {
		Check(x, x)
		Check(x, y)
	}
}
