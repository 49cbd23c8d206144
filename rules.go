package llmrouter

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/decls"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
	"go.uber.org/zap"
)

// RouteRule chooses a route from what a request asks, for requests that
// name no route and no model (or "auto").
type RouteRule struct {
	// Route is the route chosen when a When expression is true.
	Route string `json:"route"`

	// When are CEL expressions over the request (README, "Routing by query
	// type" lists the variables); the route is chosen when any is true.
	// Rules are tried in the order of RouteRules, their expressions in
	// order; the first true one wins.
	When []string `json:"when"`
}

// The variables a rule can use, computed once per request from the body
// scan (README, "Routing by query type"). A scalar's get is its Go getter,
// of type func(*ruleVars) T for T int64, bool, string or float64: its CEL
// type, ResolveName's value and the native Whens' getters all come from
// it. header (a map) has none: ResolveName makes it.
var ruleVariables = []ruleVariable{
	{"endpoint", func(a *ruleVars) string { return a.ep.String() }, "chat, completions, responses or embeddings"},
	{"model", func(a *ruleVars) string { return a.body.modelName }, "the model as sent (\"\", \"auto\")"},
	{"messages", func(a *ruleVars) int64 { return a.features().messages }, "messages (chat), input items (responses), prompts (completions)"},
	{"prompt_chars", func(a *ruleVars) int64 { return a.features().promptChars }, "characters of all message text"},
	{"last_user_chars", func(a *ruleVars) int64 { return a.features().lastUserChars }, "characters of the last user message"},
	{"last_user", func(a *ruleVars) string { return a.features().lastUser }, "the last user message's text"},
	{"system", func(a *ruleVars) string { return a.features().system }, "the system (and developer) prompt text"},
	{"has_tools", func(a *ruleVars) bool { return a.features().hasTools }, "tools or functions are given"},
	{"has_images", func(a *ruleVars) bool { return a.features().hasImages }, "a message has an image part"},
	{"json_mode", func(a *ruleVars) bool { return a.features().jsonMode }, "response_format asks for JSON"},
	{"max_tokens", func(a *ruleVars) int64 { return a.features().maxTokens }, "max_tokens, max_completion_tokens or max_output_tokens; 0 if absent"},
	{"stream", func(a *ruleVars) bool { return a.body.stream }, "the request streams"},
	{"temperature", func(a *ruleVars) float64 { return a.features().temperature }, "the temperature; -1 if absent"},
	{"header", nil, "request headers by lower-case name (first value)"},
	{"client", func(a *ruleVars) string { return a.client }, "the client_label value, \"\" without one"},
}

type ruleVariable struct {
	name string
	get  any
	doc  string
}

// celType is the variable's type in CEL.
func (v ruleVariable) celType() *cel.Type {
	switch v.get.(type) {
	case func(*ruleVars) int64:
		return cel.IntType
	case func(*ruleVars) bool:
		return cel.BoolType
	case func(*ruleVars) string:
		return cel.StringType
	case func(*ruleVars) float64:
		return cel.DoubleType
	}
	return cel.MapType(cel.StringType, cel.StringType) // header
}

// The scalar variables' getters by type, for the native Whens.
var (
	intVars    = getters[int64]()
	boolVars   = getters[bool]()
	stringVars = getters[string]()
	doubleVars = getters[float64]()
)

func getters[T any]() map[string]func(*ruleVars) T {
	m := map[string]func(*ruleVars) T{}
	for _, v := range ruleVariables {
		if g, ok := v.get.(func(*ruleVars) T); ok {
			m[v.name] = g
		}
	}
	return m
}

// ruleEnv is the CEL environment of routing rules: the variables above,
// CEL's standard functions, and contains_any.
var ruleEnv = func() *cel.Env {
	opts := []cel.EnvOption{
		cel.Function("contains_any",
			cel.Overload("contains_any_string_list", []*cel.Type{cel.StringType, cel.ListType(cel.StringType)}, cel.BoolType,
				cel.BinaryBinding(containsAny)),
			// the checker has proven the types: no run-time guard (it
			// would walk the list, allocating, on every request)
			decls.DisableTypeGuards(true)),
	}
	for _, v := range ruleVariables {
		opts = append(opts, cel.Variable(v.name, v.celType()))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		panic(err)
	}
	return env
}()

// containsAny is contains_any(text, words): whether text contains any of
// the words, ignoring case (Unicode simple case folding: "Á" matches "á";
// "ß" does not match "ss").
func containsAny(text, words ref.Val) ref.Val {
	t, ok := text.(types.String)
	list, ok2 := words.(traits.Lister)
	if !ok || !ok2 {
		return types.MaybeNoSuchOverloadErr(text)
	}
	n, _ := list.Size().(types.Int)
	for i := types.Int(0); i < n; i++ { // by index: an iterator would allocate
		if w, ok := list.Get(i).(types.String); ok && containsFold(string(t), string(w)) {
			return types.True
		}
	}
	return types.False
}

// containsFold reports whether sub is within s, ignoring case, without
// allocating. A word that starts with an ASCII byte (most do, Vietnamese
// included) is only compared where that byte, in either case, occurs:
// found by IndexByte, so that a long text costs a few vector scans per
// word rather than a comparison at every position.
func containsFold(s, sub string) bool {
	if sub == "" {
		return true
	}
	if len(sub) > len(s) {
		return false
	}
	c := sub[0]
	if c >= utf8.RuneSelf {
		for i := 0; i+len(sub) <= len(s); {
			if strings.EqualFold(s[i:i+len(sub)], sub) {
				return true
			}
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
		}
		return false
	}
	lo, up := c, c
	if 'A' <= c && c <= 'Z' {
		lo = c + 'a' - 'A'
	} else if 'a' <= c && c <= 'z' {
		up = c - ('a' - 'A')
	}
	// the next candidate of each case (-1: none left); an ASCII byte never
	// occurs inside a multi-byte character
	last := len(s) - len(sub) // the last position a match can start at
	next := func(b byte, from int) int {
		if from > last {
			return -1
		}
		if j := strings.IndexByte(s[from:last+1], b); j >= 0 {
			return from + j
		}
		return -1
	}
	nl, nu := next(lo, 0), -1
	if up != lo {
		nu = next(up, 0)
	}
	for nl >= 0 || nu >= 0 {
		i := nl
		if i < 0 || (nu >= 0 && nu < i) {
			i = nu
		}
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
		if i == nl {
			nl = next(lo, i+1)
		} else {
			nu = next(up, i+1)
		}
	}
	return false
}

// ruleSet is a config's compiled routing rules, in order.
type ruleSet struct {
	rules []*compiledRule
	// first is every When in one program, (w1) ? 0 : (w2) ? 1 : … : -1:
	// the index of the first true one, in one evaluation instead of one a
	// When. A When that fails makes it fail; choose then evaluates them one
	// by one, which treats that When as false and logs it.
	first cel.Program
	// native: every When has a Go form (nativeWhen), so choose needs no CEL
	native bool
}

type compiledRule struct {
	route  string
	n      int    // which When of the route, from 1
	reason string // the route_reason placeholder: rule:<route>#<n>
	expr   string
	prg    cel.Program
	native func(*ruleVars) bool // the When in Go, nil if CEL must evaluate it
	logged atomic.Int64         // unix seconds of the last logged failure
}

// ruleError is a rule that does not compile: which route and When.
type ruleError struct {
	route string
	n     int
	err   string
}

func (e *ruleError) Error() string {
	return fmt.Sprintf("route %s: when #%d: %s", e.route, e.n, e.err)
}

// compileRules type-checks every When at provision (and in the Caddyfile
// adapter, so that a typo is an error with its line).
func compileRules(rules []*RouteRule) (*ruleSet, error) {
	rs := new(ruleSet)
	for _, r := range rules {
		for i, expr := range r.When {
			ast, iss := ruleEnv.Compile(expr)
			if iss != nil && iss.Err() != nil {
				return nil, &ruleError{r.Route, i + 1, strings.ReplaceAll(iss.Err().Error(), "\n", " ")}
			}
			if ast.OutputType() != cel.BoolType {
				return nil, &ruleError{r.Route, i + 1, fmt.Sprintf("%q is a %s, not a bool", expr, ast.OutputType())}
			}
			prg, err := ruleEnv.Program(ast, cel.EvalOptions(cel.OptOptimize))
			if err != nil {
				return nil, &ruleError{r.Route, i + 1, err.Error()}
			}
			rs.rules = append(rs.rules, &compiledRule{route: r.Route, n: i + 1, expr: expr, prg: prg,
				native: nativeWhen(ast.NativeRep().Expr()), reason: "rule:" + r.Route + "#" + strconv.Itoa(i+1)})
		}
	}
	rs.native = len(rs.rules) > 0
	for _, r := range rs.rules {
		rs.native = rs.native && r.native != nil
	}
	if len(rs.rules) > 0 {
		// new lines around each When: a // comment in one ends with its line
		var src strings.Builder
		for i, r := range rs.rules {
			fmt.Fprintf(&src, "(\n%s\n) ? %d : ", r.expr, i)
		}
		src.WriteString("-1")
		// past the parser's nesting limit (hundreds of Whens) there is no
		// combined program, and choose takes them one by one
		if ast, iss := ruleEnv.Compile(src.String()); iss == nil || iss.Err() == nil {
			if prg, err := ruleEnv.Program(ast, cel.EvalOptions(cel.OptOptimize)); err == nil {
				rs.first = prg
			}
		}
	}
	return rs, nil
}

// ruleOutcome is what one rule said of a request.
type ruleOutcome struct {
	rule   *compiledRule
	result bool
	err    error
}

// choose evaluates the rules in order and returns the first that is true,
// or nil. A rule failing at run time counts as false; its failure is
// logged at most once a minute. With trace set, every rule up to the chosen
// one is reported to it (the dry run).
func (rs *ruleSet) choose(vars *ruleVars, logger *zap.Logger, trace func(ruleOutcome)) *compiledRule {
	if trace == nil && rs.native {
		for _, r := range rs.rules {
			if r.native(vars) {
				return r
			}
		}
		return nil
	}
	if trace == nil && rs.first != nil {
		if out, _, err := rs.first.Eval(vars); err == nil {
			if i, ok := out.(types.Int); ok {
				if i < 0 {
					return nil
				}
				return rs.rules[i]
			}
		}
	}
	for _, r := range rs.rules {
		out, _, err := r.prg.Eval(vars)
		if err == nil && types.IsError(out) {
			err = fmt.Errorf("%v", out)
		}
		result := err == nil && out == types.True
		if trace != nil {
			trace(ruleOutcome{r, result, err})
		}
		if err != nil {
			if t := time.Now().Unix(); logger != nil && t-r.logged.Load() >= 60 && r.logged.Swap(t) != t {
				logger.Warn("routing rule failed; treated as false",
					zap.String("route", r.route), zap.Int("when", r.n), zap.String("expression", r.expr), zap.Error(err))
			}
			continue
		}
		if result {
			return r
		}
	}
	return nil
}

// ruleVars is the activation of a request's rules: each variable is
// computed at most once, when a rule first reads it.
type ruleVars struct {
	ep     endpoint
	body   *requestBody
	header http.Header
	client string

	f       contentFeatures
	scanned bool
	vals    [16]ref.Val // by index in ruleVariables, once computed
}

func newRuleVars(ep endpoint, body *requestBody, header http.Header, client string) *ruleVars {
	return &ruleVars{ep: ep, body: body, header: header, client: client}
}

// endpointVals are the endpoint names as CEL values, made once.
var endpointVals = func() (v [endpointCount]ref.Val) {
	for i := range v {
		v[i] = types.String(endpoint(i).String())
	}
	return v
}()

// ResolveName implements interpreter.Activation.
func (a *ruleVars) ResolveName(name string) (any, bool) {
	i := -1
	for j, v := range ruleVariables {
		if v.name == name {
			i = j
			break
		}
	}
	if i < 0 {
		return nil, false
	}
	if a.vals[i] != nil {
		return a.vals[i], true
	}
	var v ref.Val
	switch g := ruleVariables[i].get.(type) {
	case func(*ruleVars) int64:
		v = types.Int(g(a))
	case func(*ruleVars) bool:
		v = types.Bool(g(a))
	case func(*ruleVars) float64:
		v = types.Double(g(a))
	case func(*ruleVars) string:
		if name == "endpoint" {
			v = endpointVals[a.ep] // made once: no allocation
		} else {
			v = types.String(g(a))
		}
	default: // header
		m := make(map[string]string, len(a.header))
		for k, vs := range a.header {
			if len(vs) > 0 {
				m[strings.ToLower(k)] = vs[0]
			}
		}
		v = types.DefaultTypeAdapter.NativeToValue(m)
	}
	a.vals[i] = v
	return v, true
}

// Parent implements interpreter.Activation.
func (a *ruleVars) Parent() interpreter.Activation { return nil }

func (a *ruleVars) features() *contentFeatures {
	if !a.scanned {
		a.f = scanContent(a.body)
		a.scanned = true
	}
	return &a.f
}

// contentFeatures are what the rules know of a request's content.
type contentFeatures struct {
	messages                   int64
	promptChars, lastUserChars int64
	lastUser, system           string
	hasTools, hasImages        bool
	jsonMode                   bool
	maxTokens                  int64
	temperature                float64
}

// scanContent reads the features from the members parseRequestBody found:
// one scan of their bytes, no decoding into Go values (text is decoded only
// when it has escapes; otherwise it is the body's own bytes).
func scanContent(rb *requestBody) contentFeatures {
	sc := contentScan{f: contentFeatures{temperature: -1}}
	f := &sc.f
	if v := rb.field(fieldMaxTokens); len(v) > 0 {
		f.maxTokens = atoi(v)
	}
	if v := rb.field(fieldTemperature); len(v) > 0 && v[0] != 'n' {
		if t, err := strconv.ParseFloat(string(v), 64); err == nil {
			f.temperature = t
		}
	}
	for _, i := range []int{fieldTools, fieldFunctions} {
		if v := rb.field(i); len(v) > 1 && v[0] == '[' && !isEmptyArray(v) {
			f.hasTools = true
		}
	}
	if v := rb.field(fieldResponseFormat); len(v) > 0 {
		forEachMember(v, func(key, t []byte) {
			if string(key) == "type" && (string(t) == `"json_object"` || string(t) == `"json_schema"`) {
				f.jsonMode = true
			}
		})
	}
	// chat messages; responses input (a text, or items); completions
	// prompt (a text, or texts)
	for _, i := range []int{fieldMessages, fieldInput, fieldPrompt} {
		v := rb.field(i)
		switch {
		case len(v) == 0:
		case v[0] == '"':
			sc.text(v)
		case v[0] == '[':
			it := jsonScanner{b: v, i: 1}
			for el := nextElement(&it); el != nil; el = nextElement(&it) {
				switch el[0] {
				case '{':
					sc.message(el)
				case '"':
					sc.text(el)
				}
			}
		}
	}
	if v := rb.field(fieldInstructions); len(v) > 0 && v[0] == '"' {
		t, _ := jsonText(v)
		sc.addSystem(t)
		f.promptChars += jsonStringChars(v[1:])
	}
	return sc.f
}

// field is the bytes of one of the members rules look at, nil if absent.
func (rb *requestBody) field(i int) []byte {
	if sp := rb.fields[i]; sp.start >= 0 {
		return rb.raw[sp.start:sp.end]
	}
	return nil
}

// nextElement returns the next element of the array s is in, nil at its
// end (the array is known to be valid).
func nextElement(s *jsonScanner) []byte {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ',' {
		s.i++
		s.ws()
	}
	if s.i >= len(s.b) || s.b[s.i] == ']' {
		return nil
	}
	start := s.i
	if s.value(1) != nil {
		return nil
	}
	return s.b[start:s.i]
}

// contentScan collects the features while scanning.
type contentScan struct {
	f contentFeatures
}

// addSystem adds a system prompt's text (joined by a new line to an earlier
// one: only then is a string made).
func (sc *contentScan) addSystem(text string) {
	switch {
	case text == "":
	case sc.f.system == "":
		sc.f.system = text
	default:
		sc.f.system += "\n" + text
	}
}

// text is a prompt given as a bare string: a user message.
func (sc *contentScan) text(lit []byte) {
	sc.f.messages++
	sc.f.lastUser, _ = jsonText(lit)
	sc.f.lastUserChars = jsonStringChars(lit[1:])
	sc.f.promptChars += sc.f.lastUserChars
}

// message is one message: its role and its text (a string, or the text of
// its parts), its images.
func (sc *contentScan) message(m []byte) {
	sc.f.messages++
	var role, text string
	var chars int64
	forEachMember(m, func(key, v []byte) {
		switch string(key) {
		case "role":
			role, _ = jsonText(v)
		case "content":
			text, chars = contentText(v, &sc.f.hasImages)
		}
	})
	sc.f.promptChars += chars
	switch role {
	case "user":
		sc.f.lastUser, sc.f.lastUserChars = text, chars
	case "system", "developer":
		sc.addSystem(text)
	}
}

// contentText is a message content's text and its characters: a string, or
// the text parts of an array (joined by new lines); image parts set images.
func contentText(v []byte, images *bool) (string, int64) {
	switch v[0] {
	case '"':
		t, _ := jsonText(v)
		return t, jsonStringChars(v[1:])
	case '[':
		var parts []string
		var chars int64
		forEachElement(v, func(part []byte) {
			var typ string
			var text []byte
			forEachMember(part, func(key, val []byte) {
				switch string(key) {
				case "type":
					typ, _ = jsonText(val)
				case "text":
					text = val
				}
			})
			if strings.Contains(typ, "image") {
				*images = true
			}
			if len(text) > 0 && text[0] == '"' {
				t, _ := jsonText(text)
				parts = append(parts, t)
				chars += jsonStringChars(text[1:])
			}
		})
		if len(parts) == 1 {
			return parts[0], chars
		}
		return strings.Join(parts, "\n"), chars
	}
	return "", 0
}

// jsonText is the text of a JSON string literal: the body's own bytes when
// it has no escapes (no copy: the body outlives the request's rules), else
// decoded.
func jsonText(lit []byte) (string, bool) {
	if len(lit) < 2 || lit[0] != '"' {
		return "", false
	}
	inner := lit[1 : len(lit)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			err := json.Unmarshal(lit, &s)
			return s, err == nil
		}
	}
	if len(inner) == 0 {
		return "", true
	}
	return unsafe.String(&inner[0], len(inner)), true
}

func isEmptyArray(v []byte) bool {
	for _, c := range v[1:] {
		if c == ']' {
			return true
		}
		if !isSpace(c) {
			return false
		}
	}
	return false
}

// nativeWhen compiles a type-checked When to Go when it is made only of
// what rules mostly use: the scalar variables, literals, !, && and ||,
// comparisons of two ints, two doubles or two strings (== and != also of
// two bools), and contains_any of a string and a list of literal words. It
// returns nil for anything else, which CEL then evaluates. Why: CEL's
// interpreter is general, and its working set, cold on every request,
// costs several times its warm evaluation (BENCHMARKS.md). None of these
// forms can fail at run time, so a native When is true exactly when CEL
// says true (TestNativeWhenMatchesCEL).
func nativeWhen(e celast.Expr) func(*ruleVars) bool {
	return nativeBool(e)
}

func nativeBool(e celast.Expr) func(*ruleVars) bool {
	switch e.Kind() {
	case celast.LiteralKind:
		if v, ok := e.AsLiteral().(types.Bool); ok {
			c := bool(v)
			return func(*ruleVars) bool { return c }
		}
	case celast.IdentKind:
		return boolVars[e.AsIdent()]
	case celast.CallKind:
		call := e.AsCall()
		if call.IsMemberFunction() {
			return nil
		}
		args := call.Args()
		switch fn := call.FunctionName(); fn {
		case operators.LogicalNot:
			if len(args) != 1 {
				return nil
			}
			if x := nativeBool(args[0]); x != nil {
				return func(a *ruleVars) bool { return !x(a) }
			}
		case operators.LogicalAnd, operators.LogicalOr:
			if len(args) != 2 {
				return nil
			}
			x, y := nativeBool(args[0]), nativeBool(args[1])
			if x == nil || y == nil {
				return nil
			}
			if fn == operators.LogicalAnd {
				return func(a *ruleVars) bool { return x(a) && y(a) }
			}
			return func(a *ruleVars) bool { return x(a) || y(a) }
		case "contains_any":
			if len(args) != 2 || args[1].Kind() != celast.ListKind || len(args[1].AsList().OptionalIndices()) > 0 {
				return nil
			}
			text := nativeString(args[0])
			if text == nil {
				return nil
			}
			var words []string
			for _, w := range args[1].AsList().Elements() {
				lit, ok := literal[types.String](w)
				if !ok {
					return nil
				}
				words = append(words, string(lit))
			}
			return func(a *ruleVars) bool {
				t := text(a)
				for _, w := range words {
					if containsFold(t, w) {
						return true
					}
				}
				return false
			}
		case operators.Equals, operators.NotEquals, operators.Less, operators.LessEquals, operators.Greater, operators.GreaterEquals:
			if len(args) != 2 {
				return nil
			}
			if x, y := nativeInt(args[0]), nativeInt(args[1]); x != nil && y != nil {
				return compare(fn, x, y)
			}
			if x, y := nativeDouble(args[0]), nativeDouble(args[1]); x != nil && y != nil {
				return compare(fn, x, y)
			}
			if x, y := nativeString(args[0]), nativeString(args[1]); x != nil && y != nil {
				return compare(fn, x, y)
			}
			if x, y := nativeBool(args[0]), nativeBool(args[1]); x != nil && y != nil {
				switch fn {
				case operators.Equals:
					return func(a *ruleVars) bool { return x(a) == y(a) }
				case operators.NotEquals:
					return func(a *ruleVars) bool { return x(a) != y(a) }
				}
			}
		}
	}
	return nil
}

// compare is a comparison of two values of one ordered type, as CEL
// compares them (strings by code point, which UTF-8's byte order keeps).
func compare[T int64 | float64 | string](fn string, x, y func(*ruleVars) T) func(*ruleVars) bool {
	switch fn {
	case operators.Equals:
		return func(a *ruleVars) bool { return x(a) == y(a) }
	case operators.NotEquals:
		return func(a *ruleVars) bool { return x(a) != y(a) }
	case operators.Less:
		return func(a *ruleVars) bool { return x(a) < y(a) }
	case operators.LessEquals:
		return func(a *ruleVars) bool { return x(a) <= y(a) }
	case operators.Greater:
		return func(a *ruleVars) bool { return x(a) > y(a) }
	case operators.GreaterEquals:
		return func(a *ruleVars) bool { return x(a) >= y(a) }
	}
	return nil
}

func nativeInt(e celast.Expr) func(*ruleVars) int64 {
	return nativeScalar(e, intVars, func(v types.Int) int64 { return int64(v) })
}

func nativeDouble(e celast.Expr) func(*ruleVars) float64 {
	return nativeScalar(e, doubleVars, func(v types.Double) float64 { return float64(v) })
}

func nativeString(e celast.Expr) func(*ruleVars) string {
	return nativeScalar(e, stringVars, func(v types.String) string { return string(v) })
}

// nativeScalar is e as a getter of T: a literal of CEL type L, or one of
// vars.
func nativeScalar[T any, L types.Int | types.Double | types.String](e celast.Expr, vars map[string]func(*ruleVars) T, conv func(L) T) func(*ruleVars) T {
	if v, ok := literal[L](e); ok {
		c := conv(v)
		return func(*ruleVars) T { return c }
	}
	if e.Kind() == celast.IdentKind {
		return vars[e.AsIdent()]
	}
	return nil
}

// literal is e's value when e is a literal of type T.
func literal[T types.Int | types.Double | types.String](e celast.Expr) (T, bool) {
	if e.Kind() != celast.LiteralKind {
		var zero T
		return zero, false
	}
	v, ok := e.AsLiteral().(T)
	return v, ok
}

// Interface guards
var _ interpreter.Activation = (*ruleVars)(nil)
