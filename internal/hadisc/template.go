package hadisc

// The value templates of discovery configs are Home Assistant's Jinja2
// templates. They come from anyone who can publish a retained message, so
// Vigil evaluates them with a small interpreter of its own rather than a Go
// Jinja port: the ports evaluated (gonja v2.9.1, pongo2 v6.0.0,
// ardanlabs/jinja v1.8.0) have no limit on steps, memory or output and no
// way to cancel a render; one template made gonja allocate 10 GB in 50 ms,
// a recursive macro killed the process in all three, and a fuzz run found
// two panics. This subset is what Zigbee2MQTT, Tasmota, ESPHome and Shelly
// publish:
//
//   - text, {{ expr }}, {% if %}/{% elif %}/{% else %}/{% endif %},
//     {% set name = expr %}, {# comments #}, and the "-" whitespace control;
//   - value (the payload) and value_json (the payload as JSON), literals
//     (strings, numbers, true/false/none, lists, dicts), .attr, [key],
//     a few methods (.get, .lower, .upper, .strip, .split, .replace,
//     .startswith, .endswith);
//   - operators + - * / // % ~, comparisons, in, not in, and, or, not,
//     x if c else y, tests (is defined, undefined, none, number, string,
//     boolean, mapping, true, false);
//   - filters float, int, round, abs, lower, upper, trim, string, bool,
//     default (d), is_defined, tojson (to_json), length (count), join,
//     replace, first, last, min, max, format.
//
// No loops, macros, includes or attribute access to anything but data, and
// every template is bounded: 4 KiB of source, 64 levels of nesting, 1,000
// evaluation steps, 64 KiB of output. Anything else is an error naming
// what is not supported, shown on the entity's device page.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of a template.
const (
	maxTemplateSource = maxTemplate
	maxDepth          = 64
	maxSteps          = 1000
	maxOutput         = 64 << 10
)

// Template is a compiled value template.
type Template struct {
	body []node
}

// Compile parses a template.
func Compile(src string) (*Template, error) {
	if len(src) > maxTemplateSource {
		return nil, fmt.Errorf("template of %d bytes; at most %d", len(src), maxTemplateSource)
	}
	if !utf8.ValidString(src) {
		return nil, errors.New("template is not UTF-8")
	}
	p := &parser{src: src}
	body, end, err := p.block(0)
	if err != nil {
		return nil, err
	}
	if end != "" {
		return nil, fmt.Errorf("{%% %s %%} without {%% if %%}", end)
	}
	return &Template{body: body}, nil
}

// Render compiles and renders src against payload.
func Render(src string, payload []byte) (string, error) {
	t, err := Compile(src)
	if err != nil {
		return "", err
	}
	return t.Render(payload)
}

// Render evaluates the template with value (the payload as text) and
// value_json (the payload as JSON, undefined when it is not JSON).
func (t *Template) Render(payload []byte) (string, error) {
	vars := map[string]any{"value": string(payload)}
	if v, ok := decodeJSON(payload); ok {
		vars["value_json"] = v
	}
	ev := &evaluator{vars: vars}
	if err := ev.run(t.body); err != nil {
		return "", err
	}
	return strings.TrimSpace(ev.out.String()), nil
}

// decodeJSON decodes a payload as JSON, whole numbers as int64.
func decodeJSON(b []byte) (any, bool) {
	if len(b) == 0 || len(b) > MaxConfig {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || dec.More() {
		return nil, false
	}
	return fromJSON(v), true
}

func fromJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = fromJSON(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = fromJSON(x[k])
		}
	}
	return v
}

// undefined is Jinja's Undefined: a missing variable, key or attribute.
// It renders as nothing; using it further is an error.
type undefined struct{ name string }

// --- the template's structure ---

type node interface{}

type textNode string
type exprNode struct{ e expr }
type ifNode struct {
	conds  []expr
	bodies [][]node // len(bodies) == len(conds), or one more for else
}
type setNode struct {
	name string
	e    expr
}

type parser struct {
	src string
	pos int
	// trimNext: the tag before ended in "-": strip the text's leading space.
	trimNext bool
}

// block parses nodes until {% elif/else/endif %} (returned as end) or the
// end of the source.
func (p *parser) block(depth int) (out []node, end string, err error) {
	if depth > maxDepth {
		return nil, "", errors.New("template nests too deep")
	}
	for p.pos < len(p.src) {
		i := indexTag(p.src[p.pos:])
		text := p.src[p.pos:]
		if i >= 0 {
			text = text[:i]
		}
		if p.trimNext {
			text = strings.TrimLeftFunc(text, unicode.IsSpace)
			p.trimNext = false
		}
		if i < 0 {
			out = appendText(out, text)
			p.pos = len(p.src)
			break
		}
		start := p.pos + i
		kind := p.src[start+1]
		inner := start + 2
		if inner < len(p.src) && p.src[inner] == '-' {
			text = strings.TrimRightFunc(text, unicode.IsSpace)
			inner++
		}
		out = appendText(out, text)
		closer := map[byte]string{'{': "}}", '%': "%}", '#': "#}"}[kind]
		j := strings.Index(p.src[inner:], closer)
		if j < 0 {
			return nil, "", fmt.Errorf("%s at %d is not closed", p.src[start:start+2], start)
		}
		body := p.src[inner : inner+j]
		p.pos = inner + j + 2
		if strings.HasSuffix(body, "-") {
			body = body[:len(body)-1]
			p.trimNext = true
		}
		switch kind {
		case '#':
		case '{':
			e, err := parseExpr(body, depth)
			if err != nil {
				return nil, "", err
			}
			out = append(out, exprNode{e})
		case '%':
			word, rest := cutWord(strings.TrimSpace(body))
			switch word {
			case "if":
				n, err := p.ifBlock(rest, depth)
				if err != nil {
					return nil, "", err
				}
				out = append(out, n)
			case "elif", "else", "endif":
				// The caller's if reads it.
				p.pos = start
				p.trimNext = false
				return out, word, nil
			case "set":
				name, e, ok := strings.Cut(rest, "=")
				name = strings.TrimSpace(name)
				if !ok || !isName(name) {
					return nil, "", errors.New("{% set %} needs name = expression")
				}
				x, err := parseExpr(e, depth)
				if err != nil {
					return nil, "", err
				}
				out = append(out, setNode{name, x})
			default:
				return nil, "", fmt.Errorf("{%% %s %%} is not supported (only if, elif, else, endif and set)", clipWord(word))
			}
		}
	}
	return out, "", nil
}

// ifBlock parses an if from after its condition to its endif.
func (p *parser) ifBlock(cond string, depth int) (ifNode, error) {
	var n ifNode
	c, err := parseExpr(cond, depth+1)
	if err != nil {
		return n, err
	}
	n.conds = append(n.conds, c)
	for {
		body, end, err := p.block(depth + 1)
		if err != nil {
			return n, err
		}
		n.bodies = append(n.bodies, body)
		if end == "" {
			return n, errors.New("{% if %} without {% endif %}")
		}
		// Read the tag that ended the block.
		tagStart := p.pos
		inner := tagStart + 2
		if inner < len(p.src) && p.src[inner] == '-' {
			inner++
		}
		j := strings.Index(p.src[inner:], "%}")
		body2 := p.src[inner : inner+j]
		p.pos = inner + j + 2
		if strings.HasSuffix(body2, "-") {
			body2 = body2[:len(body2)-1]
			p.trimNext = true
		}
		_, rest := cutWord(strings.TrimSpace(body2))
		switch end {
		case "endif":
			return n, nil
		case "else":
			if len(n.bodies) > len(n.conds) {
				return n, errors.New("two {% else %} in one {% if %}")
			}
			body, end, err := p.block(depth + 1)
			if err != nil {
				return n, err
			}
			n.bodies = append(n.bodies, body)
			if end != "endif" {
				return n, errors.New("{% else %} must be followed by {% endif %}")
			}
			tagStart = p.pos
			inner = tagStart + 2
			if inner < len(p.src) && p.src[inner] == '-' {
				inner++
			}
			j = strings.Index(p.src[inner:], "%}")
			body3 := p.src[inner : inner+j]
			p.pos = inner + j + 2
			if strings.HasSuffix(body3, "-") {
				p.trimNext = true
			}
			return n, nil
		case "elif":
			c, err := parseExpr(rest, depth+1)
			if err != nil {
				return n, err
			}
			n.conds = append(n.conds, c)
		}
	}
}

// indexTag finds the next "{{", "{%" or "{#".
func indexTag(s string) int {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '{' && (s[i+1] == '{' || s[i+1] == '%' || s[i+1] == '#') {
			return i
		}
	}
	return -1
}

func appendText(out []node, s string) []node {
	if s == "" {
		return out
	}
	return append(out, textNode(s))
}

func cutWord(s string) (word, rest string) {
	i := strings.IndexFunc(s, func(r rune) bool { return !(r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)) })
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

func clipWord(s string) string {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

func isName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// --- expressions ---

type expr interface{}

type (
	litExpr  struct{ v any }
	nameExpr struct{ name string }
	attrExpr struct {
		x    expr
		name string
	}
	indexExpr struct{ x, key expr }
	callExpr  struct {
		x    expr // an attrExpr: a method
		args []expr
	}
	filterExpr struct {
		x    expr
		name string
		args []expr
	}
	testExpr struct {
		x    expr
		name string
		not  bool
	}
	unaryExpr struct {
		op string
		x  expr
	}
	binExpr struct {
		op   string
		l, r expr
	}
	condExpr struct{ then, cond, els expr }
	listExpr struct{ items []expr }
	dictExpr struct{ keys, vals []expr }
	funcExpr struct {
		name string
		args []expr
	}
)

type token struct {
	kind string // "num", "str", "name", "op", "eof"
	s    string
	v    any
}

func tokenize(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c >= '0' && c <= '9' && !afterDot(out) || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' && !afterOperand(out):
			j := i
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == '_' ||
				s[j] == 'e' || s[j] == 'E' || (s[j] == '+' || s[j] == '-') && (s[j-1] == 'e' || s[j-1] == 'E')) {
				j++
			}
			lit := strings.ReplaceAll(s[i:j], "_", "")
			if n, err := strconv.ParseInt(lit, 10, 64); err == nil {
				out = append(out, token{kind: "num", s: lit, v: n})
			} else if f, err := strconv.ParseFloat(lit, 64); err == nil {
				out = append(out, token{kind: "num", s: lit, v: f})
			} else {
				return nil, fmt.Errorf("%q is not a number", clipWord(lit))
			}
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			n, err := strconv.ParseInt(s[i:j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not an index", clipWord(s[i:j]))
			}
			out = append(out, token{kind: "num", s: s[i:j], v: n})
			i = j
		case c == '\'' || c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
					switch s[j] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					default:
						b.WriteByte(s[j])
					}
					continue
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, errors.New("a string is not closed")
			}
			out = append(out, token{kind: "str", v: b.String()})
			i = j + 1
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			out = append(out, token{kind: "name", s: s[i:j]})
			i = j
		default:
			op := ""
			for _, o := range []string{"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ".", ",", ":", "|", "="} {
				if strings.HasPrefix(s[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(s[i:])
				return nil, fmt.Errorf("unexpected %q", r)
			}
			out = append(out, token{kind: "op", s: op})
			i += len(op)
		}
	}
	return append(out, token{kind: "eof"}), nil
}

// afterOperand: the last token ends an operand, so a "." after it is an
// attribute (value_json.list.0), not a number's.
func afterOperand(out []token) bool {
	if len(out) == 0 {
		return false
	}
	t := out[len(out)-1]
	return t.kind == "name" || t.kind == "op" && (t.s == ")" || t.s == "]")
}

// afterDot: digits right after an attribute's dot are an index (.0), read
// as a whole number only.
func afterDot(out []token) bool {
	return len(out) > 0 && out[len(out)-1].kind == "op" && out[len(out)-1].s == "."
}

type exprParser struct {
	toks  []token
	i     int
	depth int
}

func parseExpr(s string, depth int) (expr, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := &exprParser{toks: toks, depth: depth}
	e, err := p.cond()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != "eof" {
		return nil, fmt.Errorf("unexpected %s after the expression", describe(t))
	}
	return e, nil
}

func describe(t token) string {
	switch t.kind {
	case "eof":
		return "end"
	case "str":
		return "string"
	case "num":
		return "number " + t.s
	}
	return fmt.Sprintf("%q", clipWord(t.s))
}

func (p *exprParser) peek() token { return p.toks[p.i] }
func (p *exprParser) next() token {
	t := p.toks[p.i]
	if t.kind != "eof" {
		p.i++
	}
	return t
}
func (p *exprParser) isOp(s string) bool   { t := p.peek(); return t.kind == "op" && t.s == s }
func (p *exprParser) isWord(s string) bool { t := p.peek(); return t.kind == "name" && t.s == s }
func (p *exprParser) expect(s string) error {
	if !p.isOp(s) {
		return fmt.Errorf("expected %q, found %s", s, describe(p.peek()))
	}
	p.next()
	return nil
}

func (p *exprParser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return errors.New("expression nests too deep")
	}
	return nil
}

func (p *exprParser) cond() (expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	x, err := p.or()
	if err != nil {
		return nil, err
	}
	for p.isWord("if") {
		p.next()
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		var els expr = litExpr{undefined{"else"}}
		if p.isWord("else") {
			p.next()
			if els, err = p.cond(); err != nil {
				return nil, err
			}
		}
		x = condExpr{then: x, cond: c, els: els}
	}
	return x, nil
}

// level parses operands of next joined by any of ops, left to right.
func (p *exprParser) level(next func() (expr, error), ops ...string) (expr, error) {
	x, err := next()
	for err == nil {
		t := p.peek()
		if (t.kind != "op" && t.kind != "name") || !slices.Contains(ops, t.s) {
			return x, nil
		}
		p.next()
		var r expr
		r, err = next()
		x = binExpr{t.s, x, r}
	}
	return x, err
}

func (p *exprParser) or() (expr, error)  { return p.level(p.and, "or") }
func (p *exprParser) and() (expr, error) { return p.level(p.not, "and") }

func (p *exprParser) not() (expr, error) {
	if p.isWord("not") {
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		p.next()
		x, err := p.not()
		return unaryExpr{"not", x}, err
	}
	return p.compare()
}

// compare reads comparisons; a chain (0 < x < 5) is each pair's, joined
// by and, as in Python.
func (p *exprParser) compare() (expr, error) {
	left, err := p.sum()
	var x expr
	for err == nil {
		op := ""
		switch t := p.peek(); {
		case t.kind == "op" && slices.Contains([]string{"==", "!=", "<", "<=", ">", ">="}, t.s):
			op = t.s
			p.next()
		case p.isWord("in"):
			op = "in"
			p.next()
		case p.isWord("not") && p.toks[p.i+1].kind == "name" && p.toks[p.i+1].s == "in":
			op = "not in"
			p.i += 2
		default:
			if x == nil {
				return left, nil
			}
			return x, nil
		}
		var r expr
		r, err = p.sum()
		c := binExpr{op, left, r}
		if x == nil {
			x = c
		} else {
			x = binExpr{"and", x, c}
		}
		left = r
	}
	return x, err
}

// Jinja's order: + and - bind looser than ~, which binds looser than *.
func (p *exprParser) sum() (expr, error)    { return p.level(p.concat, "+", "-") }
func (p *exprParser) concat() (expr, error) { return p.level(p.product, "~") }

func (p *exprParser) product() (expr, error) {
	x, err := p.level(p.unary, "*", "/", "//", "%")
	if err == nil && p.isOp("**") {
		return nil, errors.New("** is not supported")
	}
	return x, err
}

// unary: a sign applies before the filters that follow (Jinja's
// -1|abs is 1).
func (p *exprParser) unary() (expr, error) {
	if p.isOp("-") || p.isOp("+") {
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		op := p.next().s
		x, err := p.unaryNoFilter()
		if err != nil {
			return nil, err
		}
		return p.filters(unaryExpr{op, x})
	}
	x, err := p.primary()
	if err != nil {
		return nil, err
	}
	return p.filters(x)
}

func (p *exprParser) unaryNoFilter() (expr, error) {
	if p.isOp("-") || p.isOp("+") {
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		op := p.next().s
		x, err := p.unaryNoFilter()
		return unaryExpr{op, x}, err
	}
	return p.primary()
}

// filters reads "| name(args)" and "is [not] test" after an operand.
func (p *exprParser) filters(x expr) (expr, error) {
	for {
		switch {
		case p.isOp("|"):
			p.next()
			t := p.next()
			if t.kind != "name" {
				return nil, errors.New("a filter name must follow |")
			}
			var args []expr
			if p.isOp("(") {
				var err error
				if args, err = p.args(); err != nil {
					return nil, err
				}
			}
			x = filterExpr{x, t.s, args}
		case p.isWord("is"):
			p.next()
			not := false
			if p.isWord("not") {
				p.next()
				not = true
			}
			t := p.next()
			if t.kind != "name" {
				return nil, errors.New("a test name must follow is")
			}
			x = testExpr{x, t.s, not}
		default:
			return x, nil
		}
	}
}

func (p *exprParser) args() ([]expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var args []expr
	err := p.items(")", func() error {
		// Keyword arguments (default(x, boolean=true)) are taken by position.
		if t := p.peek(); t.kind == "name" && p.toks[p.i+1].kind == "op" && p.toks[p.i+1].s == "=" {
			p.i += 2
		}
		a, err := p.cond()
		if err != nil {
			return err
		}
		args = append(args, a)
		if len(args) > 8 {
			return errors.New("too many arguments")
		}
		return nil
	})
	return args, err
}

// items reads comma-separated items up to and including close.
func (p *exprParser) items(close string, item func() error) error {
	for !p.isOp(close) {
		if err := item(); err != nil {
			return err
		}
		if !p.isOp(",") {
			break
		}
		p.next()
	}
	return p.expect(close)
}

func (p *exprParser) primary() (expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	var x expr
	t := p.next()
	switch {
	case t.kind == "num" || t.kind == "str":
		x = litExpr{t.v}
	case t.kind == "name":
		switch t.s {
		case "true", "True":
			x = litExpr{true}
		case "false", "False":
			x = litExpr{false}
		case "none", "None":
			x = litExpr{nil}
		default:
			if p.isOp("(") {
				if !slices.Contains([]string{"float", "int", "str", "bool", "round", "abs", "min", "max"}, t.s) {
					return nil, fmt.Errorf("function %s is not supported", clipWord(t.s))
				}
				args, err := p.args()
				if err != nil {
					return nil, err
				}
				x = funcExpr{t.s, args}
			} else {
				x = nameExpr{t.s}
			}
		}
	case t.kind == "op" && t.s == "(":
		e, err := p.cond()
		if err != nil {
			return nil, err
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		x = e
	case t.kind == "op" && t.s == "[":
		var l listExpr
		if err := p.items("]", func() error {
			e, err := p.cond()
			l.items = append(l.items, e)
			return err
		}); err != nil {
			return nil, err
		}
		x = l
	case t.kind == "op" && t.s == "{":
		var d dictExpr
		if err := p.items("}", func() error {
			k, err := p.cond()
			if err != nil {
				return err
			}
			if err := p.expect(":"); err != nil {
				return err
			}
			v, err := p.cond()
			d.keys, d.vals = append(d.keys, k), append(d.vals, v)
			return err
		}); err != nil {
			return nil, err
		}
		x = d
	default:
		return nil, fmt.Errorf("unexpected %s", describe(t))
	}
	// Postfix: .attr, .method(args), [key].
	for {
		switch {
		case p.isOp("."):
			p.next()
			n := p.next()
			if n.kind != "name" && n.kind != "num" {
				return nil, errors.New("a name must follow a dot")
			}
			name := n.s
			if strings.HasPrefix(name, "_") {
				return nil, fmt.Errorf("attribute %s is not allowed", clipWord(name))
			}
			x = attrExpr{x, name}
			if p.isOp("(") {
				args, err := p.args()
				if err != nil {
					return nil, err
				}
				x = callExpr{x, args}
			}
		case p.isOp("["):
			p.next()
			k, err := p.cond()
			if err != nil {
				return nil, err
			}
			if p.isOp(":") {
				return nil, errors.New("slices are not supported")
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			x = indexExpr{x, k}
		default:
			return x, nil
		}
	}
}

// --- evaluation ---

type evaluator struct {
	vars  map[string]any
	out   strings.Builder
	steps int
}

var errSteps = errors.New("template takes too many steps")

func (ev *evaluator) step() error {
	ev.steps++
	if ev.steps > maxSteps {
		return errSteps
	}
	return nil
}

func (ev *evaluator) run(body []node) error {
	for _, n := range body {
		if err := ev.step(); err != nil {
			return err
		}
		switch n := n.(type) {
		case textNode:
			ev.out.WriteString(string(n))
		case exprNode:
			v, err := ev.eval(n.e)
			if err != nil {
				return err
			}
			ev.out.WriteString(str(v))
		case setNode:
			v, err := ev.eval(n.e)
			if err != nil {
				return err
			}
			if len(ev.vars) > 64 {
				return errors.New("too many variables")
			}
			ev.vars[n.name] = v
		case ifNode:
			done := false
			for i, c := range n.conds {
				v, err := ev.eval(c)
				if err != nil {
					return err
				}
				if truthy(v) {
					if err := ev.run(n.bodies[i]); err != nil {
						return err
					}
					done = true
					break
				}
			}
			if !done && len(n.bodies) > len(n.conds) {
				if err := ev.run(n.bodies[len(n.conds)]); err != nil {
					return err
				}
			}
		}
		if ev.out.Len() > maxOutput {
			return errors.New("template output is too long")
		}
	}
	return nil
}

func (ev *evaluator) eval(e expr) (any, error) {
	if err := ev.step(); err != nil {
		return nil, err
	}
	switch e := e.(type) {
	case litExpr:
		return e.v, nil
	case nameExpr:
		if v, ok := ev.vars[e.name]; ok {
			return v, nil
		}
		return undefined(e), nil
	case attrExpr:
		x, err := ev.eval(e.x)
		if err != nil {
			return nil, err
		}
		return getItem(x, e.name, true)
	case indexExpr:
		x, err := ev.eval(e.x)
		if err != nil {
			return nil, err
		}
		k, err := ev.eval(e.key)
		if err != nil {
			return nil, err
		}
		return getItem(x, k, false)
	case callExpr:
		a := e.x.(attrExpr)
		x, args, err := ev.withArgs(a.x, e.args)
		if err != nil {
			return nil, err
		}
		return method(x, a.name, args)
	case filterExpr:
		x, args, err := ev.withArgs(e.x, e.args)
		if err != nil {
			return nil, err
		}
		return filter(e.name, x, args)
	case funcExpr:
		args, err := ev.evalAll(e.args)
		if err != nil {
			return nil, err
		}
		if len(args) == 0 {
			return nil, fmt.Errorf("%s() needs an argument", e.name)
		}
		name := e.name
		if name == "str" {
			name = "string"
		}
		return filter(name, args[0], args[1:])
	case testExpr:
		x, err := ev.eval(e.x)
		if err != nil {
			return nil, err
		}
		r, err := test(e.name, x)
		return r != e.not, err
	case unaryExpr:
		x, err := ev.eval(e.x)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "not":
			return !truthy(x), nil
		case "+":
			if _, ok := x.(float64); ok {
				return x, nil
			}
			if _, ok := x.(int64); ok {
				return x, nil
			}
			return nil, fmt.Errorf("+ of %s", typeName(x))
		}
		switch n := x.(type) {
		case int64:
			if n == math.MinInt64 {
				return float64(-n), nil
			}
			return -n, nil
		case float64:
			return -n, nil
		case bool:
			return -b2i(n), nil
		}
		return nil, fmt.Errorf("- of %s", typeName(x))
	case condExpr:
		c, err := ev.eval(e.cond)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return ev.eval(e.then)
		}
		return ev.eval(e.els)
	case binExpr:
		l, err := ev.eval(e.l)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "and":
			if !truthy(l) {
				return l, nil
			}
			return ev.eval(e.r)
		case "or":
			if truthy(l) {
				return l, nil
			}
			return ev.eval(e.r)
		}
		r, err := ev.eval(e.r)
		if err != nil {
			return nil, err
		}
		return binary(e.op, l, r)
	case listExpr:
		l, err := ev.evalAll(e.items)
		if err != nil {
			return nil, err
		}
		if err := scalars(l...); err != nil {
			return nil, err
		}
		return l, nil
	case dictExpr:
		m := make(map[string]any, len(e.keys))
		for i := range e.keys {
			k, err := ev.eval(e.keys[i])
			if err != nil {
				return nil, err
			}
			v, err := ev.eval(e.vals[i])
			if err != nil {
				return nil, err
			}
			if err := scalars(k, v); err != nil {
				return nil, err
			}
			m[str(k)] = v
		}
		return m, nil
	}
	return nil, fmt.Errorf("cannot evaluate %T", e)
}

// withArgs evaluates a method's or filter's operand and arguments.
func (ev *evaluator) withArgs(x expr, args []expr) (any, []any, error) {
	v, err := ev.eval(x)
	if err != nil {
		return nil, nil, err
	}
	vs, err := ev.evalAll(args)
	return v, vs, err
}

func (ev *evaluator) evalAll(es []expr) ([]any, error) {
	out := make([]any, 0, len(es))
	for _, e := range es {
		v, err := ev.eval(e)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func getItem(x, key any, attr bool) (any, error) {
	name := str(key)
	switch c := x.(type) {
	case undefined:
		return nil, fmt.Errorf("%s is undefined (reading %s)", c.name, clipWord(name))
	case map[string]any:
		if v, ok := c[name]; ok {
			return v, nil
		}
		return undefined{clipWord(name)}, nil
	case []any:
		i, ok := asInt(key)
		if attr {
			n, err := strconv.Atoi(name)
			i, ok = int64(n), err == nil
		}
		if !ok {
			return undefined{clipWord(name)}, nil
		}
		if i < 0 {
			i += int64(len(c))
		}
		if i < 0 || i >= int64(len(c)) {
			return undefined{clipWord(name)}, nil
		}
		return c[i], nil
	case string:
		if i, ok := asInt(key); ok && !attr {
			r := []rune(c)
			if i < 0 {
				i += int64(len(r))
			}
			if i >= 0 && i < int64(len(r)) {
				return string(r[i]), nil
			}
		}
		return undefined{clipWord(name)}, nil
	}
	return undefined{clipWord(name)}, nil
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case bool:
		return b2i(n), true
	}
	return 0, false
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func method(x any, name string, args []any) (any, error) {
	switch c := x.(type) {
	case map[string]any:
		if name == "get" && len(args) >= 1 {
			if v, ok := c[str(args[0])]; ok {
				return v, nil
			}
			if len(args) > 1 {
				return args[1], nil
			}
			return nil, nil
		}
	case string:
		switch name {
		case "lower":
			return strings.ToLower(c), nil
		case "upper":
			return strings.ToUpper(c), nil
		case "strip":
			return strings.TrimSpace(c), nil
		case "startswith":
			if len(args) == 1 {
				return strings.HasPrefix(c, str(args[0])), nil
			}
		case "endswith":
			if len(args) == 1 {
				return strings.HasSuffix(c, str(args[0])), nil
			}
		case "split":
			var parts []string
			if len(args) == 0 {
				parts = strings.Fields(c)
			} else if sep := str(args[0]); sep != "" {
				parts = strings.Split(c, sep)
			} else {
				return nil, errors.New("split with an empty separator")
			}
			out := make([]any, len(parts))
			for i, s := range parts {
				out[i] = s
			}
			return out, nil
		case "replace":
			if len(args) == 2 {
				return replace(c, str(args[0]), str(args[1]))
			}
		}
	case undefined:
		return nil, fmt.Errorf("%s is undefined (calling %s)", c.name, clipWord(name))
	}
	return nil, fmt.Errorf("method %s of %s is not supported", clipWord(name), typeName(x))
}

func replace(s, old, new string) (any, error) {
	if n := strings.Count(s, old); old != "" && len(s)+n*(len(new)-len(old)) > maxOutput {
		return nil, errors.New("result is too long")
	}
	if old == "" {
		return s, nil
	}
	return strings.ReplaceAll(s, old, new), nil
}

func test(name string, x any) (bool, error) {
	_, undef := x.(undefined)
	switch name {
	case "defined":
		return !undef, nil
	case "undefined":
		return undef, nil
	case "none":
		return x == nil, nil
	case "number":
		switch x.(type) {
		case int64, float64:
			return true, nil
		}
		return false, nil
	case "string":
		_, ok := x.(string)
		return ok, nil
	case "boolean":
		_, ok := x.(bool)
		return ok, nil
	case "mapping":
		_, ok := x.(map[string]any)
		return ok, nil
	case "true":
		return x == true, nil
	case "false":
		return x == false, nil
	}
	return false, fmt.Errorf("test %s is not supported", clipWord(name))
}

func filter(name string, x any, args []any) (any, error) {
	arg := func(i int) (any, bool) {
		if i < len(args) {
			return args[i], true
		}
		return nil, false
	}
	switch name {
	case "is_defined":
		if u, ok := x.(undefined); ok {
			return nil, fmt.Errorf("%s is undefined", u.name)
		}
		return x, nil
	case "default", "d":
		d, _ := arg(0)
		if d == nil && len(args) == 0 {
			d = ""
		}
		boolean, _ := arg(1)
		if _, undef := x.(undefined); undef || (truthy(boolean) && !truthy(x)) {
			return d, nil
		}
		return x, nil
	case "float":
		if f, ok := toFloat(x); ok {
			return f, nil
		}
		if d, ok := arg(0); ok {
			return d, nil
		}
		return nil, invalidInput("float", x)
	case "int":
		if i, ok := toInt(x); ok {
			return i, nil
		}
		if d, ok := arg(0); ok {
			return d, nil
		}
		return nil, invalidInput("int", x)
	case "round":
		f, ok := toFloat(x)
		if !ok {
			if d, ok := arg(2); ok {
				return d, nil
			}
			return nil, invalidInput("round", x)
		}
		prec := int64(0)
		if p, ok := arg(0); ok {
			if prec, ok = asInt(p); !ok || prec < -15 || prec > 15 {
				return nil, errors.New("round's precision must be a whole number from -15 to 15")
			}
		}
		method := "common"
		if m, ok := arg(1); ok {
			method = str(m)
		}
		scale := math.Pow(10, float64(prec))
		switch method {
		case "common":
			if prec >= 0 {
				f, _ = strconv.ParseFloat(strconv.FormatFloat(f, 'f', int(prec), 64), 64)
			} else {
				f = math.RoundToEven(f*scale) / scale
			}
		case "floor":
			f = math.Floor(f*scale) / scale
		case "ceil":
			f = math.Ceil(f*scale) / scale
		case "half": // Home Assistant's: to the nearest half, whatever the precision
			f = math.Round(f*2) / 2
		default: // Home Assistant rounds as common
			if prec >= 0 {
				f, _ = strconv.ParseFloat(strconv.FormatFloat(f, 'f', int(prec), 64), 64)
			} else {
				f = math.RoundToEven(f*scale) / scale
			}
		}
		if prec == 0 && math.Abs(f) < 1<<62 {
			return int64(f), nil
		}
		return f, nil
	case "abs":
		switch n := x.(type) {
		case int64:
			if n < 0 && n != math.MinInt64 {
				return -n, nil
			}
			return n, nil
		case float64:
			return math.Abs(n), nil
		}
		return nil, fmt.Errorf("abs of %s", typeName(x))
	case "lower":
		return strings.ToLower(str(x)), nil
	case "upper":
		return strings.ToUpper(str(x)), nil
	case "trim":
		return strings.TrimSpace(str(x)), nil
	case "string":
		return str(x), nil
	case "bool":
		switch v := x.(type) {
		case bool:
			return v, nil
		case int64, float64:
			return truthy(v), nil
		case string:
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "true", "yes", "on", "enable", "1":
				return true, nil
			case "false", "no", "off", "disable", "0":
				return false, nil
			}
		}
		if d, ok := arg(0); ok {
			return d, nil
		}
		return nil, fmt.Errorf("bool got invalid input %s when rendering", clipWord(str(x)))
	case "tojson", "to_json":
		if _, ok := x.(undefined); ok {
			return nil, errors.New("tojson of an undefined value")
		}
		b, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		return string(b), nil
	case "length", "count":
		switch c := x.(type) {
		case string:
			return int64(utf8.RuneCountInString(c)), nil
		case []any:
			return int64(len(c)), nil
		case map[string]any:
			return int64(len(c)), nil
		}
		return nil, fmt.Errorf("length of %s", typeName(x))
	case "join":
		l, ok := x.([]any)
		if !ok {
			return nil, fmt.Errorf("join of %s", typeName(x))
		}
		sep := ""
		if s, ok := arg(0); ok {
			sep = str(s)
		}
		parts := make([]string, len(l))
		n := 0
		for i, v := range l {
			parts[i] = str(v)
			n += len(parts[i]) + len(sep)
		}
		if n > maxOutput {
			return nil, errors.New("result is too long")
		}
		return strings.Join(parts, sep), nil
	case "replace":
		if len(args) != 2 {
			return nil, errors.New("replace needs two arguments")
		}
		return replace(str(x), str(args[0]), str(args[1]))
	case "first", "last":
		l, ok := x.([]any)
		if !ok {
			if s, ok := x.(string); ok && s != "" {
				r := []rune(s)
				if name == "first" {
					return string(r[0]), nil
				}
				return string(r[len(r)-1]), nil
			}
			return nil, fmt.Errorf("%s of %s", name, typeName(x))
		}
		if len(l) == 0 {
			return undefined{name}, nil
		}
		if name == "first" {
			return l[0], nil
		}
		return l[len(l)-1], nil
	case "min", "max":
		l, ok := x.([]any)
		if !ok {
			l = append([]any{x}, args...)
		}
		if len(l) == 0 {
			return nil, fmt.Errorf("%s of an empty list", name)
		}
		best := l[0]
		for _, v := range l[1:] {
			c, err := compare(v, best)
			if err != nil {
				return nil, err
			}
			if (name == "min" && c < 0) || (name == "max" && c > 0) {
				best = v
			}
		}
		return best, nil
	case "format":
		return format(str(x), args)
	}
	return nil, fmt.Errorf("filter %s is not supported", clipWord(name))
}

// invalidInput is the error of a filter given what it cannot convert.
func invalidInput(filter string, x any) error {
	if u, ok := x.(undefined); ok {
		return fmt.Errorf("%s is undefined (%s got no value)", u.name, filter)
	}
	return fmt.Errorf("%s got invalid input %q when rendering", filter, clipWord(str(x)))
}

// format is Python's "%" formatting for %s, %d, %i, %f (with flags,
// width and precision) and %%.
func format(f string, args []any) (any, error) {
	var b strings.Builder
	n := 0
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			b.WriteByte(f[i])
			continue
		}
		j := i + 1
		for j < len(f) && strings.IndexByte("-+ 0#.123456789", f[j]) >= 0 {
			j++
		}
		if j >= len(f) {
			return nil, errors.New("format: incomplete % directive")
		}
		spec, verb := f[i+1:j], f[j]
		i = j
		if verb == '%' {
			b.WriteByte('%')
			continue
		}
		if n >= len(args) {
			return nil, errors.New("format: not enough arguments")
		}
		if w, _, _ := strings.Cut(strings.TrimLeft(spec, "-+ 0#"), "."); len(w) > 2 {
			return nil, errors.New("format: width too large")
		}
		if _, p, ok := strings.Cut(spec, "."); ok && len(p) > 2 {
			return nil, errors.New("format: precision too large")
		}
		a := args[n]
		n++
		switch verb {
		case 's':
			fmt.Fprintf(&b, "%"+spec+"s", str(a))
		case 'd', 'i':
			v, ok := toInt(a)
			if !ok {
				return nil, fmt.Errorf("format: %%d needs a number, not %s", typeName(a))
			}
			fmt.Fprintf(&b, "%"+spec+"d", v)
		case 'f', 'F', 'e', 'g':
			v, ok := toFloat(a)
			if !ok {
				return nil, fmt.Errorf("format: %%%c needs a number, not %s", verb, typeName(a))
			}
			if !strings.Contains(spec, ".") && verb != 'g' {
				spec += ".6"
			}
			fmt.Fprintf(&b, "%"+spec+string(verb), v)
		default:
			return nil, fmt.Errorf("format: %%%c is not supported", verb)
		}
		if b.Len() > maxOutput {
			return nil, errors.New("result is too long")
		}
	}
	return b.String(), nil
}

func toFloat(x any) (float64, bool) {
	switch v := x.(type) {
	case int64:
		return float64(v), true
	case float64:
		return v, true
	case bool:
		return float64(b2i(v)), true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return f, err == nil
	}
	return 0, false
}

func toInt(x any) (int64, bool) {
	switch v := x.(type) {
	case int64:
		return v, true
	case float64:
		if math.IsNaN(v) || math.Abs(v) >= 1<<63 {
			return 0, false
		}
		return int64(v), true
	case bool:
		return b2i(v), true
	case string:
		s := strings.TrimSpace(v)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, true
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return toInt(f)
		}
	}
	return 0, false
}

func binary(op string, l, r any) (any, error) {
	switch op {
	case "~":
		s := str(l) + str(r)
		if len(s) > maxOutput {
			return nil, errors.New("result is too long")
		}
		return s, nil
	case "==":
		return equal(l, r), nil
	case "!=":
		return !equal(l, r), nil
	case "<", "<=", ">", ">=":
		c, err := compare(l, r)
		if err != nil {
			return nil, err
		}
		return map[string]bool{"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0}[op], nil
	case "in", "not in":
		in, err := contains(r, l)
		if err != nil {
			return nil, err
		}
		return in == (op == "in"), nil
	}
	for _, v := range []any{l, r} {
		if u, ok := v.(undefined); ok {
			return nil, fmt.Errorf("%s is undefined", u.name)
		}
	}
	// Strings and lists.
	if ls, ok := l.(string); ok {
		switch rv := r.(type) {
		case string:
			if op == "+" {
				if len(ls)+len(rv) > maxOutput {
					return nil, errors.New("result is too long")
				}
				return ls + rv, nil
			}
		case int64:
			if op == "*" {
				if rv <= 0 {
					return "", nil
				}
				if rv > maxOutput/int64(max(len(ls), 1)) {
					return nil, errors.New("result is too long")
				}
				return strings.Repeat(ls, int(rv)), nil
			}
		}
		return nil, fmt.Errorf("%s %s %s is not supported", typeName(l), op, typeName(r))
	}
	if ll, ok := l.([]any); ok {
		if rl, ok := r.([]any); ok && op == "+" {
			if len(ll)+len(rl) > 64 || scalars(ll...) != nil || scalars(rl...) != nil {
				return nil, errors.New("result is too long")
			}
			return append(slices.Clip(ll), rl...), nil
		}
		return nil, fmt.Errorf("%s %s %s is not supported", typeName(l), op, typeName(r))
	}
	li, lInt := asNumInt(l)
	ri, rInt := asNumInt(r)
	if lInt && rInt && op != "/" {
		switch op {
		case "+":
			s := li + ri
			if (s > li) == (ri > 0) {
				return s, nil
			}
		case "-":
			s := li - ri
			if (s < li) == (ri > 0) {
				return s, nil
			}
		case "*":
			if li == 0 || ri == 0 {
				return int64(0), nil
			}
			p := li * ri
			if p/ri == li && !(li == -1 && ri == math.MinInt64) && !(ri == -1 && li == math.MinInt64) {
				return p, nil
			}
		case "//", "%":
			if ri == 0 {
				return nil, errors.New("division by zero")
			}
			if li == math.MinInt64 && ri == -1 {
				break
			}
			q, m := li/ri, li%ri
			if m != 0 && (m < 0) != (ri < 0) { // Python floors
				q--
				m += ri
			}
			if op == "//" {
				return q, nil
			}
			return m, nil
		}
		// Overflow: as floats.
	}
	lf, lok := toNumber(l)
	rf, rok := toNumber(r)
	if !lok || !rok {
		return nil, fmt.Errorf("%s %s %s is not supported", typeName(l), op, typeName(r))
	}
	switch op {
	case "+":
		return lf + rf, nil
	case "-":
		return lf - rf, nil
	case "*":
		return lf * rf, nil
	case "/":
		if rf == 0 {
			return nil, errors.New("division by zero")
		}
		return lf / rf, nil
	case "//":
		if rf == 0 {
			return nil, errors.New("division by zero")
		}
		return math.Floor(lf / rf), nil
	case "%":
		if rf == 0 {
			return nil, errors.New("division by zero")
		}
		m := math.Mod(lf, rf)
		if m != 0 && (m < 0) != (rf < 0) {
			m += rf
		}
		return m, nil
	}
	return nil, fmt.Errorf("operator %s is not supported", op)
}

// scalars refuses lists and dicts inside a list or dict a template makes:
// nested ones could grow exponentially within the step limit
// ({% set a = [a, a] %}). Data from value_json may nest: its size is the
// payload's.
func scalars(vs ...any) error {
	for _, v := range vs {
		switch v.(type) {
		case []any, map[string]any:
			return errors.New("lists and dicts inside a list or dict a template makes are not supported")
		}
	}
	return nil
}

func asNumInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case bool:
		return b2i(n), true
	}
	return 0, false
}

// toNumber: numbers and booleans only (Python does not add "1" + 1).
func toNumber(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case bool:
		return float64(b2i(n)), true
	}
	return 0, false
}

func equal(l, r any) bool {
	if lf, ok := toNumber(l); ok {
		if rf, ok := toNumber(r); ok {
			return lf == rf
		}
		return false
	}
	switch lv := l.(type) {
	case string:
		rv, ok := r.(string)
		return ok && lv == rv
	case nil:
		return r == nil
	case undefined:
		_, ok := r.(undefined)
		return ok
	}
	lb, err1 := json.Marshal(l)
	rb, err2 := json.Marshal(r)
	return err1 == nil && err2 == nil && bytes.Equal(lb, rb)
}

func compare(l, r any) (int, error) {
	if lf, ok := toNumber(l); ok {
		if rf, ok := toNumber(r); ok {
			switch {
			case lf < rf:
				return -1, nil
			case lf > rf:
				return 1, nil
			}
			return 0, nil
		}
	}
	if ls, ok := l.(string); ok {
		if rs, ok := r.(string); ok {
			return strings.Compare(ls, rs), nil
		}
	}
	return 0, fmt.Errorf("cannot compare %s and %s", typeName(l), typeName(r))
}

func contains(container, item any) (bool, error) {
	switch c := container.(type) {
	case string:
		s, ok := item.(string)
		if !ok {
			return false, fmt.Errorf("'in <string>' needs a string, not %s", typeName(item))
		}
		return strings.Contains(c, s), nil
	case []any:
		for _, v := range c {
			if equal(v, item) {
				return true, nil
			}
		}
		return false, nil
	case map[string]any:
		s, ok := item.(string)
		if !ok {
			return false, nil
		}
		_, in := c[s]
		return in, nil
	case undefined:
		return false, fmt.Errorf("%s is undefined", c.name)
	}
	return false, fmt.Errorf("'in' needs a string, list or mapping, not %s", typeName(container))
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil, undefined:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "none"
	case undefined:
		return "undefined"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "string"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	}
	return fmt.Sprintf("%T", v)
}

// str writes a value as Python's str() does: True, None, 1.0, 'a'.
func str(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case undefined:
		return ""
	case bool:
		if x {
			return "True"
		}
		return "False"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return pyFloat(x)
	case string:
		return x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = repr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = repr(k) + ": " + repr(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v)
}

func repr(v any) string {
	if s, ok := v.(string); ok {
		return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
	}
	return str(v)
}

// pyFloat writes a float as Python's repr: 21.84, 1.0, 1e+16, inf.
func pyFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	if a := math.Abs(f); a != 0 && (a >= 1e16 || a < 1e-4) {
		s := strconv.FormatFloat(f, 'e', -1, 64)
		// Go writes 1e+16 and 1.5e-05; Python the same.
		return s
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}
