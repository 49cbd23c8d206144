package llmrouter

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/decls"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/overloads"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/interpreter"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/llmrouter/caddy-llm-router/internal/openai"
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

	// Sources are where each When was written ("Caddyfile:42"), for
	// logs; the Caddyfile adapter sets them. Optional.
	Sources []string `json:"sources,omitempty"`
}

// ruleCostLimit bounds one evaluation of a When (CEL's cost units: about
// one a comparison, one a ten characters of text scanned), so that no rule
// costs more than a linear scan of a large body. An evaluation over it
// counts as false, and is logged once per rule and counted.
var ruleCostLimit uint64 = 1_000_000

// ruleProgram makes a rule's CEL program: under the cost limit, with the
// calls whose work CEL does not see costing one a ten characters of their
// text, as CEL's own contains does: contains_any (CEL knows no cost of
// ours; charged as one scan, its words being the config's few) and size
// (which counts a string's characters; CEL charges 1). Without that a
// loop the client sizes (over header) could scan a large body once an
// iteration, far under the limit.
func ruleProgram(ast *cel.Ast) (cel.Program, error) {
	scan := func(args []ref.Val, _ ref.Val) *uint64 {
		n := uint64(1)
		if t, ok := args[0].(types.String); ok {
			n += cost.SafeMultiplyByFactor(uint64(utf8.RuneCountInString(string(t))), common.StringTraversalCostFactor)
		}
		return &n
	}
	return ruleEnv.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(ruleCostLimit),
		cel.CostTrackerOptions(
			interpreter.OverloadCostTracker("contains_any_string_list", scan),
			interpreter.OverloadCostTracker(overloads.SizeString, scan),
			interpreter.OverloadCostTracker(overloads.SizeStringInst, scan)))
}

// The variables a rule can use, computed once per request from the body
// scan (README, "Routing by query type"). A scalar's get is its Go getter,
// of type func(*ruleVars) T for T int64, bool, string or float64: its CEL
// type, ResolveName's value and the native Whens' getters all come from
// it. header (a map) has none: ResolveName makes it.
var ruleVariables = []ruleVariable{
	{"endpoint", func(a *ruleVars) string { return a.ep.String() }, "chat, completions, responses or embeddings"},
	{"model", func(a *ruleVars) string { return a.body.Model }, "the model as sent (\"\", \"auto\")"},
	{"messages", func(a *ruleVars) int64 { return a.body.Messages }, "messages (chat), input items (responses), prompts (completions)"},
	{"prompt_chars", func(a *ruleVars) int64 { return a.body.TextChars }, "characters of all text the model reads (messages, prompts, instructions)"},
	{"last_user_chars", func(a *ruleVars) int64 { return a.body.LastUserChars }, "characters of the last user message"},
	{"last_user", func(a *ruleVars) string { return a.lastUserText() }, "the last user message's text"},
	{"system", func(a *ruleVars) string { return a.systemText() }, "the system (and developer) prompt text"},
	{"has_tools", func(a *ruleVars) bool { return a.body.HasTools }, "tools or functions are given"},
	{"has_images", func(a *ruleVars) bool { return a.body.Images > 0 }, "a message has an image part"},
	{"json_mode", func(a *ruleVars) bool { return a.body.JSONMode }, "response_format asks for JSON"},
	{"max_tokens", func(a *ruleVars) int64 { return a.body.MaxTokens }, "max_tokens, max_completion_tokens or max_output_tokens; 0 if absent"},
	{"stream", func(a *ruleVars) bool { return a.body.Stream }, "the request streams"},
	{"temperature", func(a *ruleVars) float64 { return a.body.Temperature }, "the temperature; -1 if absent"},
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
	source string               // where it was written, if known
	logged atomic.Int64         // unix seconds of the last logged failure
	// the cost limit stopped it: logged once
	costLogged atomic.Bool
	costCount  prometheus.Counter
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
			prg, err := ruleProgram(ast)
			if err != nil {
				return nil, &ruleError{r.Route, i + 1, err.Error()}
			}
			cr := &compiledRule{route: r.Route, n: i + 1, expr: expr, prg: prg,
				native: nativeWhen(ast.NativeRep().Expr()), reason: "rule:" + r.Route + "#" + strconv.Itoa(i+1),
				costCount: metrics.ruleCost.WithLabelValues(r.Route, strconv.Itoa(i+1))}
			if i < len(r.Sources) {
				cr.source = r.Sources[i]
			}
			rs.rules = append(rs.rules, cr)
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
		// combined program, and choose takes them one by one. Its cost
		// limit is one When's: under it, every When it evaluated was too,
		// so it chooses as one by one does; over it, choose goes one by
		// one, where a When over the limit is false (a larger limit would
		// let a When costing more than one limit be true here).
		if ast, iss := ruleEnv.Compile(src.String()); iss == nil || iss.Err() == nil {
			if prg, err := ruleProgram(ast); err == nil {
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
		if err != nil && !overCostLimit(err) {
			err = vars.scrubRequest(err)
		}
		result := err == nil && out == types.True
		if trace != nil {
			trace(ruleOutcome{r, result, err})
		}
		if err != nil {
			r.failed(err, logger)
			continue
		}
		if result {
			return r
		}
	}
	return nil
}

// overCostLimit reports whether CEL stopped a When at the cost limit: by
// its cancellation, not its text, which a failed conversion's error shares
// with the client's text it quotes.
func overCostLimit(err error) bool {
	var c interpreter.EvalCancelledError
	return errors.As(err, &c) && c.Cause == interpreter.CostLimitExceeded
}

// failed logs and counts a When that failed at run time: one stopped by the
// cost limit once for the rule's life, others at most once a minute.
func (r *compiledRule) failed(err error, logger *zap.Logger) {
	if overCostLimit(err) {
		r.costCount.Inc()
		if logger != nil && !r.costLogged.Swap(true) {
			logger.Warn("routing rule stopped at the cost limit; treated as false (logged once)",
				zap.String("route", r.route), zap.Int("when", r.n), zap.String("source", r.source),
				zap.String("expression", r.expr), zap.Uint64("cost_limit", ruleCostLimit))
		}
		return
	}
	if t := time.Now().Unix(); logger != nil && t-r.logged.Load() >= 60 && r.logged.Swap(t) != t {
		logger.Warn("routing rule failed; treated as false",
			zap.String("route", r.route), zap.Int("when", r.n), zap.String("source", r.source),
			zap.String("expression", r.expr), zap.Error(err))
	}
}

// ruleVars is the activation of a request's rules: each variable is
// computed at most once, when a rule first reads it.
type ruleVars struct {
	ep     endpoint
	body   *openai.Request
	header http.Header
	client string

	// the texts, made once (a text in parts, or many system messages, is
	// joined)
	lastUser, system       string
	haveLastUser, haveSyst bool

	vals [16]ref.Val // by index in ruleVariables, once computed
}

func newRuleVars(ep endpoint, body *openai.Request, header http.Header, client string) *ruleVars {
	return &ruleVars{ep: ep, body: body, header: header, client: client}
}

func (a *ruleVars) lastUserText() string {
	if !a.haveLastUser {
		a.lastUser, a.haveLastUser = a.body.LastUser(), true
	}
	return a.lastUser
}

func (a *ruleVars) systemText() string {
	if !a.haveSyst {
		a.system, a.haveSyst = a.body.System(), true
	}
	return a.system
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

// scrubRequest masks in a rule's run-time error every request header's
// value, and each word of one, and the request's texts a rule read: CEL
// quotes the value a conversion, a lookup or a pattern failed on
// (timestamp(header["authorization"]), timestamp(system),
// "x".matches(last_user)), the error is logged and shown by the dry run,
// a header may hold a credential, and a prompt is the client's data, kept
// out of logs as out of spans. A text is masked as it is and as Go quotes
// it (escaped quotes, line breaks): one replacement each, linear in its
// length. The error is then cut to maxRuleError before the headers' words
// are looked for in it, one search each: in the whole error, which may
// quote a header of a megabyte, a client's header of many words cost
// their number times its length (and an allocation of it per word found).
func (a *ruleVars) scrubRequest(err error) error {
	text := err.Error()
	masked := text
	for _, v := range [...]string{a.lastUser, a.system, a.body.Model, a.client} {
		if len(v) < 4 {
			continue
		}
		masked = strings.ReplaceAll(masked, v, "<request text>")
		if q := strconv.Quote(v); len(q) > len(v)+2 {
			masked = strings.ReplaceAll(masked, q[1:len(q)-1], "<request text>")
		}
	}
	masked = cutRuleError(masked)
	mask := func(v string) {
		if len(v) >= 4 && len(v) <= len(masked) {
			masked = strings.ReplaceAll(masked, v, "<header value>")
		}
	}
	for _, vs := range a.header {
		for _, v := range vs {
			mask(v)
			for _, w := range strings.Fields(v) {
				mask(w)
			}
		}
	}
	if masked == text {
		return err
	}
	return errors.New(masked)
}

// maxRuleError bounds a rule's run-time error as logged and shown (the
// expression is logged beside it): CEL may quote a whole header or text.
const maxRuleError = 512

// cutRuleError cuts s to maxRuleError bytes, and back to the last white
// space, quote or backslash before the cut: a word cut in two would no
// longer be found, and masked.
func cutRuleError(s string) string {
	if len(s) <= maxRuleError {
		return s
	}
	s = s[:maxRuleError]
	return s[:max(strings.LastIndexAny(s, " \t\n\"'`\\"), 0)] + "…"
}

// Parent implements interpreter.Activation.
func (a *ruleVars) Parent() interpreter.Activation { return nil }

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
