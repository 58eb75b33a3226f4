package audit

import (
	"bytes"
	"encoding/json"
	"io"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
)

// longEvidence is one evidence line far wider than a terminal.
const longEvidence = "the broker answered every one of these topics without credentials: " +
	"home/kitchen/thermostat home/kitchen/fridge home/garage/door home/garage/camera " +
	"home/garden/sprinkler home/hall/alarm home/hall/lock home/office/printer"

// longToken is one word wider than a terminal, which must stay whole.
const longToken = `payload={"user":"admin","password":"[redacted]","token":"[redacted]","wifi":"[redacted]"}`

// sampleReport is a report with a finding of every severity, out of order,
// two findings of one check, evidence that needs wrapping and escaping,
// and checks of every status.
func sampleReport(target string) *Report {
	return &Report{
		Target:     target,
		Grade:      "F",
		Broker:     "mosquitto version 2.0.18",
		Nmap:       "not installed — not used",
		Started:    time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC),
		DurationMS: 4237,
		Findings: []Finding{
			{ID: "sys-topics-exposed", Severity: Low, Title: "$SYS topics are readable by anyone",
				Evidence:    "$SYS/broker/version: mosquitto version 2.0.18\n$SYS/broker/clients/connected: 3",
				Remediation: "Deny $SYS/# to clients that do not need it in the ACL file."},
			{ID: "anonymous-access", Severity: Critical, Title: "Anonymous clients can connect",
				Evidence:    "CONNECT without a username was accepted on mqtt://broker.example:1883",
				Remediation: "Set allow_anonymous false and give every client its own user and password."},
			{ID: "broker-fingerprint", Severity: Info, Title: "The broker says what it is",
				Evidence: "mosquitto version 2.0.18"},
			{ID: "no-tls", Severity: High, Title: "MQTT travels without TLS",
				Evidence:    "port 1883 speaks plain MQTT",
				Remediation: "Listen on 8883 with TLS and close 1883 to everything but loopback."},
			{ID: "retained-leak", Severity: Medium, Title: "Retained messages hold secrets",
				Evidence:    longEvidence + "\n" + longToken,
				Remediation: "Clear the retained messages (publish an empty retained message to each topic) and stop devices from publishing credentials."},
			{ID: "retained-leak", Severity: Medium, Title: "A retained message holds markup and terminal escapes",
				Evidence:    "home/display/banner: <script>alert(1)</script>\x1b[2J",
				Remediation: "Clear it."},
		},
		Checks: []CheckResult{
			{ID: "open-ports", Status: StatusPassed, DurationMS: 12},
			{ID: "no-tls", Status: StatusFound, DurationMS: 3},
			{ID: "tls-cert", Status: StatusSkipped, Note: "no TLS port answers"},
			{ID: "anonymous-access", Status: StatusFound, DurationMS: 40},
			{ID: "broker-fingerprint", Status: StatusFound, DurationMS: 510},
			{ID: "sys-topics-exposed", Status: StatusFound, DurationMS: 505},
			{ID: "retained-leak", Status: StatusFound, DurationMS: 600},
			{ID: "latency", Status: StatusError, Note: "timeout after 3s", DurationMS: 3000},
			{ID: "invalid-qos", Status: StatusPassed, DurationMS: 20},
		},
	}
}

func write(t *testing.T, format string, reports []*Report, o FormatOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, format, reports, o); err != nil {
		t.Fatalf("Write %s: %v", format, err)
	}
	return b.String()
}

func TestWriteText(t *testing.T) {
	out := write(t, "text", []*Report{sampleReport("mqtt://broker.example:1883")}, FormatOptions{})
	lines := strings.Split(out, "\n")
	t.Logf("text report:\n%s", out)

	t.Run("its header gives the target, the grade and the broker", func(t *testing.T) {
		if want := "mqtt://broker.example:1883 — grade F — mosquitto version 2.0.18"; lines[0] != want {
			t.Errorf("header %q, want %q", lines[0], want)
		}
		if want := "Findings: 1 critical, 1 high, 2 medium, 1 low, 1 info"; lines[1] != want {
			t.Errorf("summary %q, want %q", lines[1], want)
		}
	})

	t.Run("it groups findings by severity, most severe first", func(t *testing.T) {
		order := []string{"CRITICAL", "  anonymous-access:", "HIGH", "  no-tls:", "MEDIUM",
			"  retained-leak: Retained messages hold secrets", "  retained-leak: A retained message",
			"LOW", "  sys-topics-exposed:", "INFO", "  broker-fingerprint:", "Checks:"}
		at := -1
		for _, want := range order {
			i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) })
			if i <= at {
				t.Errorf("%q is at line %d, not after line %d", want, i, at)
			}
			at = i
		}
	})

	t.Run("it indents every evidence line", func(t *testing.T) {
		for _, want := range []string{
			"      $SYS/broker/version: mosquitto version 2.0.18",
			"      $SYS/broker/clients/connected: 3",
			"      " + longToken,
		} {
			if !slices.Contains(lines, want) {
				t.Errorf("no line %q", want)
			}
		}
	})

	t.Run("it gives each remediation after Fix:", func(t *testing.T) {
		if !strings.Contains(out, "\n    Fix: Set allow_anonymous false and give every client its own user and\n         password.\n") {
			t.Error("the anonymous-access remediation is missing or badly wrapped")
		}
		if strings.Count(out, "Fix:") != 5 {
			t.Errorf("%d Fix: lines, want 5 (one finding has no remediation)", strings.Count(out, "Fix:"))
		}
	})

	t.Run("it sums up the checks and lists the skipped and failed ones with their notes", func(t *testing.T) {
		for _, want := range []string{
			"Checks: 2 passed, 5 found, 1 skipped, 1 failed",
			"  skipped tls-cert: no TLS port answers",
			"  failed latency: timeout after 3s",
		} {
			if !slices.Contains(lines, want) {
				t.Errorf("no line %q", want)
			}
		}
	})

	t.Run("it says how nmap was used and how long the audit took", func(t *testing.T) {
		for _, want := range []string{"nmap: not installed — not used", "Took 4.237s, started 2026-03-14 09:26:53 UTC"} {
			if !slices.Contains(lines, want) {
				t.Errorf("no line %q", want)
			}
		}
	})

	t.Run("it keeps lines within 80 columns and never cuts evidence", func(t *testing.T) {
		for i, l := range lines {
			if n := utf8.RuneCountInString(l); n > textWidth && len(strings.Fields(l)) > 1 {
				t.Errorf("line %d has %d columns: %q", i+1, n, l)
			}
		}
		flat := strings.Join(strings.Fields(out), " ")
		if !strings.Contains(flat, longEvidence) {
			t.Error("the long evidence line lost words")
		}
	})

	t.Run("it has no ANSI codes and escapes the broker's", func(t *testing.T) {
		if strings.ContainsRune(out, '\x1b') {
			t.Error("escape character in a report without colour")
		}
		if !strings.Contains(out, `<script>alert(1)</script>\x1b[2J`) {
			t.Error("the evidence's escape sequence is not shown escaped")
		}
	})

	t.Run("in colour it paints severities and the grade", func(t *testing.T) {
		col := write(t, "text", []*Report{sampleReport("mqtt://broker.example:1883")}, FormatOptions{Color: true})
		for _, want := range []string{"\x1b[1;31mCRITICAL\x1b[0m", "grade \x1b[1;31mF\x1b[0m", "\x1b[33mMEDIUM\x1b[0m"} {
			if !strings.Contains(col, want) {
				t.Errorf("no %q in the coloured report", want)
			}
		}
		if strings.Count(col, "\x1b[2J") != 0 {
			t.Error("the broker's escape sequence reached the terminal")
		}
	})

	t.Run("a clean report says it has no findings", func(t *testing.T) {
		out := write(t, "text", []*Report{{Target: "broker.example", Nmap: "skipped"}}, FormatOptions{})
		for _, want := range []string{"broker.example — grade A\n", "Findings: none\n", "Checks: none ran\n", "nmap: skipped\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in %q", want, out)
			}
		}
	})
}

func TestTextWrap(t *testing.T) {
	word := strings.Repeat("x", 90)
	for _, tc := range []struct {
		name, s, first, rest, want string
	}{
		{"a short line stays as it is", "a short line", "  ", "    ", "  a short line\n"},
		{"a long line breaks at the last space that fits",
			strings.Repeat("word ", 20), "", "  ",
			strings.TrimSpace(strings.Repeat("word ", 16)) + "\n  " + strings.TrimSpace(strings.Repeat("word ", 4)) + "\n"},
		{"a word wider than a line stays whole", "see " + word + " here", "", "", "see\n" + word + "\nhere\n"},
		{"line breaks are kept and continue with the rest prefix", "one\ntwo", "- ", "  ", "- one\n  two\n"},
		{"leading spaces are not a place to break", "    " + word, "", "", "    " + word + "\n"},
		{"blank lines have no trailing spaces", "one\n\ntwo", "  ", "  ", "  one\n\n  two\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			wrap(&b, tc.s, tc.first, tc.rest)
			if b.String() != tc.want {
				t.Errorf("wrap(%q) =\n%q\nwant\n%q", tc.s, b.String(), tc.want)
			}
		})
	}
}

func TestTextClean(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain text and newlines pass", "a b\nc — d", "a b\nc — d"},
		{"escape sequences are shown, not run", "\x1b[31mred", `\x1b[31mred`},
		{"carriage returns and C1 controls are shown", "a\rb\u009bc", `a\x0db\u009bc`},
		{"bidirectional overrides are shown", "abc\u202edef", `abc\u202edef`},
		{"invalid UTF-8 is shown byte by byte", "a\xffb", `a\xffb`},
		{"tabs become spaces", "a\tb", "a    b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clean(tc.in); got != tc.want {
				t.Errorf("clean(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// jsonReport is the documented shape of a JSON report.
type jsonReport struct {
	Target   string `json:"target"`
	Grade    string `json:"grade"`
	Findings []struct {
		ID          string `json:"id"`
		Severity    string `json:"severity"`
		Title       string `json:"title"`
		Evidence    string `json:"evidence"`
		Remediation string `json:"remediation"`
	} `json:"findings"`
	Checks []struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		Note       string `json:"note"`
		DurationMS int64  `json:"duration_ms"`
	} `json:"checks"`
	Broker     string    `json:"broker"`
	Nmap       string    `json:"nmap"`
	Started    time.Time `json:"started"`
	DurationMS int64     `json:"duration_ms"`
}

func decodeStrict(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode: %v\n%s", err, s)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("more than one JSON value: %v", err)
	}
}

func TestWriteJSON(t *testing.T) {
	t.Run("one report is one object with the documented fields", func(t *testing.T) {
		r := sampleReport("mqtt://broker.example:1883")
		out := write(t, "json", []*Report{r}, FormatOptions{})
		if !strings.HasPrefix(out, "{\n  \"target\"") {
			t.Errorf("not an indented object: %.40q", out)
		}
		var got jsonReport
		decodeStrict(t, out, &got)
		if got.Target != r.Target || got.Grade != "F" || got.Broker != r.Broker || got.Nmap != r.Nmap ||
			!got.Started.Equal(r.Started) || got.DurationMS != r.DurationMS {
			t.Errorf("report fields: %+v", got)
		}
		if len(got.Findings) != len(r.Findings) || len(got.Checks) != len(r.Checks) {
			t.Fatalf("%d findings and %d checks, want %d and %d", len(got.Findings), len(got.Checks), len(r.Findings), len(r.Checks))
		}
		for i, f := range got.Findings {
			w := r.Findings[i]
			if f.ID != w.ID || f.Severity != w.Severity.String() || f.Title != w.Title || f.Evidence != w.Evidence || f.Remediation != w.Remediation {
				t.Errorf("finding %d: %+v, want %+v", i, f, w)
			}
		}
		if got.Checks[2].Note != "no TLS port answers" || got.Checks[7].Status != StatusError {
			t.Errorf("checks: %+v", got.Checks)
		}
	})

	t.Run("it round-trips into a Report", func(t *testing.T) {
		r := sampleReport("mqtt://broker.example:1883")
		var back Report
		decodeStrict(t, write(t, "json", []*Report{r}, FormatOptions{}), &back)
		if !reflect.DeepEqual(&back, r) {
			t.Errorf("round trip:\n%+v\nwant\n%+v", back, *r)
		}
	})

	t.Run("several reports are an array", func(t *testing.T) {
		out := write(t, "json", []*Report{sampleReport("mqtt://a.example"), sampleReport("mqtt://b.example")}, FormatOptions{})
		var got []jsonReport
		decodeStrict(t, out, &got)
		if len(got) != 2 || got[0].Target != "mqtt://a.example" || got[1].Target != "mqtt://b.example" {
			t.Errorf("array: %+v", got)
		}
	})

	t.Run("no findings are an empty array, not null, and the grade is filled in", func(t *testing.T) {
		out := write(t, "json", []*Report{{Target: "broker.example"}}, FormatOptions{})
		if !strings.Contains(out, `"findings": []`) || !strings.Contains(out, `"checks": []`) {
			t.Errorf("empty findings or checks not []:\n%s", out)
		}
		var got jsonReport
		decodeStrict(t, out, &got)
		if got.Grade != "A" || got.Findings == nil {
			t.Errorf("grade %q, findings %v", got.Grade, got.Findings)
		}
	})
}

// sarifDef is what the SARIF 2.1.0 schema says of one of its object
// definitions: the properties it allows (every definition Vigil writes
// has "additionalProperties": false) and those it requires.
type sarifDef struct{ allowed, required []string }

// sarifDefs are the definitions Vigil's SARIF uses, transcribed from the
// OASIS schema (sarif-spec, Schemata/sarif-schema-2.1.0.json).
var sarifDefs = map[string]sarifDef{
	"sarifLog": {[]string{"$schema", "version", "runs", "inlineExternalProperties", "properties"}, []string{"version", "runs"}},
	"run": {[]string{"tool", "invocations", "conversion", "language", "versionControlProvenance", "originalUriBaseIds",
		"artifacts", "logicalLocations", "graphs", "results", "automationDetails", "runAggregates", "baselineGuid",
		"redactionTokens", "defaultEncoding", "defaultSourceLanguage", "newlineSequences", "columnKind",
		"externalPropertyFileReferences", "threadFlowLocations", "taxonomies", "addresses", "translations", "policies",
		"webRequests", "webResponses", "specialLocations", "properties"}, []string{"tool"}},
	"tool": {[]string{"driver", "extensions", "properties"}, []string{"driver"}},
	"toolComponent": {[]string{"guid", "name", "organization", "product", "productSuite", "shortDescription",
		"fullDescription", "fullName", "version", "semanticVersion", "dottedQuadFileVersion", "releaseDateUtc",
		"downloadUri", "informationUri", "globalMessageStrings", "notifications", "rules", "taxa", "locations",
		"language", "contents", "isComprehensive", "localizedDataSemanticVersion",
		"minimumRequiredLocalizedDataSemanticVersion", "associatedComponent", "translationMetadata",
		"supportedTaxonomies", "properties"}, []string{"name"}},
	"reportingDescriptor": {[]string{"id", "deprecatedIds", "guid", "deprecatedGuids", "name", "deprecatedNames",
		"shortDescription", "fullDescription", "messageStrings", "defaultConfiguration", "helpUri", "help",
		"relationships", "properties"}, []string{"id"}},
	"multiformatMessageString": {[]string{"text", "markdown", "properties"}, []string{"text"}},
	"reportingConfiguration":   {[]string{"enabled", "level", "rank", "parameters", "properties"}, nil},
	"result": {[]string{"ruleId", "ruleIndex", "rule", "kind", "level", "message", "analysisTarget", "locations",
		"guid", "correlationGuid", "occurrenceCount", "partialFingerprints", "fingerprints", "stacks", "codeFlows",
		"graphs", "graphTraversals", "relatedLocations", "suppressions", "baselineState", "rank", "attachments",
		"hostedViewerUri", "workItemUris", "provenance", "fixes", "taxa", "webRequest", "webResponse", "properties"},
		[]string{"message"}},
	"message":          {[]string{"text", "markdown", "id", "arguments", "properties"}, nil},
	"location":         {[]string{"id", "physicalLocation", "logicalLocations", "message", "annotations", "relationships", "properties"}, nil},
	"physicalLocation": {[]string{"address", "artifactLocation", "region", "contextRegion", "properties"}, nil},
	"artifactLocation": {[]string{"uri", "uriBaseId", "index", "description", "properties"}, nil},
	"invocation": {[]string{"commandLine", "arguments", "responseFiles", "startTimeUtc", "endTimeUtc", "exitCode",
		"ruleConfigurationOverrides", "notificationConfigurationOverrides", "toolExecutionNotifications",
		"toolConfigurationNotifications", "exitCodeDescription", "exitSignalName", "exitSignalNumber",
		"processStartFailureMessage", "executionSuccessful", "machine", "account", "processId", "executableLocation",
		"workingDirectory", "environmentVariables", "stdin", "stdout", "stderr", "stdoutStderr", "properties"},
		[]string{"executionSuccessful"}},
	"notification": {[]string{"locations", "message", "level", "threadId", "timeUtc", "exception", "descriptor",
		"associatedRule", "properties"}, []string{"message"}},
	"runAutomationDetails": {[]string{"description", "id", "guid", "correlationGuid", "properties"}, nil},
}

// sarifLevels is the schema's enum for result, notification and
// reportingConfiguration levels.
var sarifLevels = []string{"none", "note", "warning", "error"}

// sarifChecker checks a SARIF log against sarifDefs and the schema's
// enums, types and anyOf rules for the parts Vigil writes.
type sarifChecker struct{ t *testing.T }

func (c sarifChecker) object(path string, v any, def string) map[string]any {
	c.t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		c.t.Errorf("%s: %T, want a %s object", path, v, def)
		return map[string]any{}
	}
	d, ok := sarifDefs[def]
	if !ok {
		c.t.Fatalf("no definition %s", def)
	}
	for k := range m {
		if !slices.Contains(d.allowed, k) {
			c.t.Errorf("%s: %s has no property %q", path, def, k)
		}
	}
	for _, k := range d.required {
		if _, ok := m[k]; !ok {
			c.t.Errorf("%s: %s requires %q", path, def, k)
		}
	}
	return m
}

func (c sarifChecker) array(path string, v any) []any {
	c.t.Helper()
	a, ok := v.([]any)
	if !ok {
		c.t.Errorf("%s: %T, want an array", path, v)
	}
	return a
}

func (c sarifChecker) str(path string, v any) string {
	c.t.Helper()
	s, ok := v.(string)
	if !ok {
		c.t.Errorf("%s: %T, want a string", path, v)
	}
	return s
}

func (c sarifChecker) level(path string, v any) {
	c.t.Helper()
	if v == nil {
		return
	}
	if s := c.str(path, v); !slices.Contains(sarifLevels, s) {
		c.t.Errorf("%s: level %q is not one of %v", path, s, sarifLevels)
	}
}

func (c sarifChecker) text(path string, v any) {
	c.t.Helper()
	c.str(path+".text", c.object(path, v, "multiformatMessageString")["text"])
}

func (c sarifChecker) message(path string, v any) {
	c.t.Helper()
	m := c.object(path, v, "message")
	if _, ok := m["text"].(string); !ok {
		if _, ok := m["id"].(string); !ok {
			c.t.Errorf("%s: a message needs text or id", path)
		}
	}
}

func (c sarifChecker) uri(path string, v any, absolute bool) {
	c.t.Helper()
	s := c.str(path, v)
	u, err := url.Parse(s)
	switch {
	case s == "" || err != nil:
		c.t.Errorf("%s: %q is not a URI: %v", path, s, err)
	case absolute && !u.IsAbs():
		c.t.Errorf("%s: %q is not an absolute URI", path, s)
	}
}

func (c sarifChecker) time(path string, v any) {
	c.t.Helper()
	if v == nil {
		return
	}
	if _, err := time.Parse(time.RFC3339, c.str(path, v)); err != nil {
		c.t.Errorf("%s: not a date-time: %v", path, err)
	}
}

// log checks a whole log and returns it decoded.
func (c sarifChecker) log(data []byte) map[string]any {
	c.t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		c.t.Fatalf("SARIF is not JSON: %v", err)
	}
	log := c.object("log", v, "sarifLog")
	if log["version"] != "2.1.0" {
		c.t.Errorf("version %v, want 2.1.0", log["version"])
	}
	c.uri("$schema", log["$schema"], true)
	for i, rv := range c.array("runs", log["runs"]) {
		p := "runs[" + strconv.Itoa(i) + "]"
		run := c.object(p, rv, "run")
		tool := c.object(p+".tool", run["tool"], "tool")
		driver := c.object(p+".tool.driver", tool["driver"], "toolComponent")
		if c.str(p+".tool.driver.name", driver["name"]) == "" {
			c.t.Errorf("%s: the driver has no name", p)
		}
		if v, ok := driver["informationUri"]; ok {
			c.uri(p+".tool.driver.informationUri", v, true)
		}
		var ruleIDs []string
		for j, rv := range c.array(p+".tool.driver.rules", driver["rules"]) {
			rp := p + ".tool.driver.rules[" + strconv.Itoa(j) + "]"
			rule := c.object(rp, rv, "reportingDescriptor")
			id := c.str(rp+".id", rule["id"])
			if id == "" || slices.Contains(ruleIDs, id) {
				c.t.Errorf("%s: id %q is empty or not unique", rp, id)
			}
			ruleIDs = append(ruleIDs, id)
			for _, k := range []string{"shortDescription", "fullDescription", "help"} {
				if v, ok := rule[k]; ok {
					c.text(rp+"."+k, v)
				}
			}
			if v, ok := rule["defaultConfiguration"]; ok {
				c.level(rp+".defaultConfiguration.level", c.object(rp+".defaultConfiguration", v, "reportingConfiguration")["level"])
			}
			if props, ok := rule["properties"].(map[string]any); ok {
				tags := c.array(rp+".properties.tags", props["tags"])
				for k, tag := range tags {
					if slices.Index(tags, tag) != k {
						c.t.Errorf("%s: tag %v twice", rp, tag)
					}
				}
				if s, err := strconv.ParseFloat(c.str(rp+".properties.security-severity", props["security-severity"]), 64); err != nil || s < 0 || s > 10 {
					c.t.Errorf("%s: security-severity %v is not a score from 0 to 10", rp, props["security-severity"])
				}
			}
		}
		for j, rv := range c.array(p+".results", run["results"]) {
			rp := p + ".results[" + strconv.Itoa(j) + "]"
			res := c.object(rp, rv, "result")
			c.message(rp+".message", res["message"])
			c.level(rp+".level", res["level"])
			idx, ok := res["ruleIndex"].(float64)
			if !ok || idx != float64(int(idx)) || int(idx) < 0 || int(idx) >= len(ruleIDs) {
				c.t.Errorf("%s: ruleIndex %v does not index the rules", rp, res["ruleIndex"])
			} else if res["ruleId"] != ruleIDs[int(idx)] {
				c.t.Errorf("%s: ruleId %v, but rule %d is %q", rp, res["ruleId"], int(idx), ruleIDs[int(idx)])
			}
			for k, lv := range c.array(rp+".locations", res["locations"]) {
				lp := rp + ".locations[" + strconv.Itoa(k) + "]"
				loc := c.object(lp, lv, "location")
				phys := c.object(lp+".physicalLocation", loc["physicalLocation"], "physicalLocation")
				al := c.object(lp+".physicalLocation.artifactLocation", phys["artifactLocation"], "artifactLocation")
				c.uri(lp+".physicalLocation.artifactLocation.uri", al["uri"], false)
			}
			fps, ok := res["partialFingerprints"].(map[string]any)
			if !ok || len(fps) == 0 {
				c.t.Errorf("%s: no partialFingerprints", rp)
			}
			for k, v := range fps {
				c.str(rp+".partialFingerprints."+k, v)
			}
		}
		for j, iv := range c.array(p+".invocations", run["invocations"]) {
			ip := p + ".invocations[" + strconv.Itoa(j) + "]"
			inv := c.object(ip, iv, "invocation")
			if _, ok := inv["executionSuccessful"].(bool); !ok {
				c.t.Errorf("%s: executionSuccessful is not a boolean", ip)
			}
			c.time(ip+".startTimeUtc", inv["startTimeUtc"])
			c.time(ip+".endTimeUtc", inv["endTimeUtc"])
			if v, ok := inv["toolExecutionNotifications"]; ok {
				for k, nv := range c.array(ip+".toolExecutionNotifications", v) {
					np := ip + ".toolExecutionNotifications[" + strconv.Itoa(k) + "]"
					n := c.object(np, nv, "notification")
					c.message(np+".message", n["message"])
					c.level(np+".level", n["level"])
				}
			}
		}
		if v, ok := run["automationDetails"]; ok {
			ad := c.object(p+".automationDetails", v, "runAutomationDetails")
			if c.str(p+".automationDetails.id", ad["id"]) == "" {
				c.t.Errorf("%s: empty automationDetails.id", p)
			}
		}
	}
	return log
}

// sarifOf writes reports as SARIF, checks the log and decodes it.
func sarifOf(t *testing.T, reports ...*Report) sarifLog {
	t.Helper()
	out := write(t, "sarif", reports, FormatOptions{Version: "1.2.3"})
	sarifChecker{t}.log([]byte(out))
	var log sarifLog
	if err := json.Unmarshal([]byte(out), &log); err != nil {
		t.Fatal(err)
	}
	return log
}

func TestWriteSARIF(t *testing.T) {
	t.Run("a log conforms to the SARIF 2.1.0 schema's rules for what it holds", func(t *testing.T) {
		log := sarifOf(t, sampleReport("mqtt://a.example:1883"), sampleReport("b.example:1884"), &Report{Target: "[::1]"})
		if log.Schema != "https://json.schemastore.org/sarif-2.1.0.json" || len(log.Runs) != 3 {
			t.Fatalf("$schema %q, %d runs", log.Schema, len(log.Runs))
		}
		d := log.Runs[0].Tool.Driver
		if d.Name != "vigil audit" || d.Version != "1.2.3" || d.InformationURI != "https://github.com/vigilhq/vigil" {
			t.Errorf("driver %+v", d)
		}
		var uris []string
		for _, run := range log.Runs {
			if len(run.Invocations) != 1 || !run.Invocations[0].ExecutionSuccessful {
				t.Errorf("invocations %+v", run.Invocations)
			}
			uris = append(uris, run.AutomationDetails.ID)
		}
		want := []string{"vigil-audit/mqtt://a.example:1883/20260314T092653Z", "vigil-audit/mqtt://b.example:1884/20260314T092653Z", "vigil-audit/mqtt://[::1]/"}
		if !slices.Equal(uris, want) {
			t.Errorf("automationDetails ids %q, want %q", uris, want)
		}
	})

	t.Run("no reports make a log with no runs", func(t *testing.T) {
		if log := sarifOf(t); log.Runs == nil || len(log.Runs) != 0 {
			t.Errorf("runs %v", log.Runs)
		}
	})

	t.Run("rules are the checks that found something, with levels and scores", func(t *testing.T) {
		run := sarifOf(t, sampleReport("mqtt://a.example:1883")).Runs[0]
		var ids []string
		for _, r := range run.Tool.Driver.Rules {
			ids = append(ids, r.ID)
		}
		if want := []string{"no-tls", "anonymous-access", "broker-fingerprint", "sys-topics-exposed", "retained-leak"}; !slices.Equal(ids, want) {
			t.Errorf("rules %v, want %v (in Order)", ids, want)
		}
		want := map[string][2]string{
			"anonymous-access": {"error", "9.5"}, "no-tls": {"error", "8.0"}, "retained-leak": {"warning", "5.5"},
			"sys-topics-exposed": {"note", "3.0"}, "broker-fingerprint": {"note", "0.0"},
		}
		for _, r := range run.Tool.Driver.Rules {
			if got := [2]string{r.DefaultConfiguration.Level, r.Properties.SecuritySeverity}; got != want[r.ID] {
				t.Errorf("rule %s: level and score %v, want %v", r.ID, got, want[r.ID])
			}
			if !slices.Equal(r.Properties.Tags, []string{"security", "mqtt"}) || r.ShortDescription.Text == "" || r.Help.Text == "" {
				t.Errorf("rule %s: %+v", r.ID, r)
			}
		}
		if r := run.Tool.Driver.Rules[4]; r.Name != "RetainedLeak" || !strings.Contains(r.Help.Text, "Clear the retained messages") || !strings.Contains(r.Help.Text, "Clear it.") {
			t.Errorf("retained-leak rule: %+v", r)
		}
		for _, res := range run.Results {
			if res.Locations[0].PhysicalLocation.ArtifactLocation.URI != "mqtt://a.example:1883" {
				t.Errorf("result location %+v", res.Locations)
			}
		}
		if m := run.Results[1].Message.Text; m != "Anonymous clients can connect\n\nCONNECT without a username was accepted on mqtt://broker.example:1883" {
			t.Errorf("message %q", m)
		}
	})

	t.Run("skipped and failed checks are tool notifications", func(t *testing.T) {
		inv := sarifOf(t, sampleReport("mqtt://a.example:1883")).Runs[0].Invocations[0]
		want := []sarifNotification{
			{Level: "note", Message: sarifText{Text: "tls-cert skipped: no TLS port answers"}},
			{Level: "error", Message: sarifText{Text: "latency failed: timeout after 3s"}},
		}
		if !reflect.DeepEqual(inv.Notifications, want) || inv.StartTimeUTC != "2026-03-14T09:26:53.000Z" || inv.EndTimeUTC != "2026-03-14T09:26:57.237Z" {
			t.Errorf("invocation %+v", inv)
		}
	})

	t.Run("fingerprints are stable and tell targets and findings apart", func(t *testing.T) {
		fps := func(target string) []string {
			var out []string
			for _, res := range sarifOf(t, sampleReport(target)).Runs[0].Results {
				out = append(out, res.PartialFingerprints[sarifFingerprint])
			}
			return out
		}
		a1, a2, b := fps("mqtt://a.example:1883"), fps("mqtt://a.example:1883"), fps("mqtt://b.example:1883")
		if !slices.Equal(a1, a2) {
			t.Errorf("two writes of one report: %v and %v", a1, a2)
		}
		for i := range a1 {
			if a1[i] == b[i] {
				t.Errorf("result %d has one fingerprint for two targets", i)
			}
			if slices.Index(a1, a1[i]) != i {
				t.Errorf("result %d has the fingerprint of an earlier one", i)
			}
		}
		if a1[1] != fingerprint("mqtt://a.example:1883", "anonymous-access", 1) {
			t.Errorf("anonymous-access fingerprint %s is not the hash of its target and id", a1[1])
		}
	})

	t.Run("levels follow severities", func(t *testing.T) {
		for s, want := range map[Severity]string{Critical: "error", High: "error", Medium: "warning", Low: "note", Info: "note"} {
			if got := sarifLevel(s); got != want {
				t.Errorf("%s: %s, want %s", s, got, want)
			}
		}
	})
}

// balanced reports whether every element the HTML opens it also closes,
// in order (void elements aside).
func balanced(t *testing.T, doc string) {
	t.Helper()
	void := []string{"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
	var stack []string
	z := html.NewTokenizer(strings.NewReader(doc))
	for {
		switch z.Next() {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				t.Fatal(z.Err())
			}
			if len(stack) > 0 {
				t.Errorf("unclosed elements %v", stack)
			}
			return
		case html.StartTagToken:
			name, _ := z.TagName()
			if !slices.Contains(void, string(name)) {
				stack = append(stack, string(name))
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(stack) == 0 || stack[len(stack)-1] != string(name) {
				t.Errorf("</%s> closes %v", name, stack)
				return
			}
			stack = stack[:len(stack)-1]
		}
	}
}

func TestWriteHTML(t *testing.T) {
	r := sampleReport("mqtt://broker.example:1883")
	out := write(t, "html", []*Report{r}, FormatOptions{Version: "1.2.3"})
	doc, err := html.Parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var (
		elems = map[string][]*html.Node{}
		walk  func(*html.Node)
	)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			elems[n.Data] = append(elems[n.Data], n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	text := func(n *html.Node) string {
		var b strings.Builder
		var f func(*html.Node)
		f = func(n *html.Node) {
			if n.Type == html.TextNode {
				b.WriteString(n.Data)
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				f(c)
			}
		}
		f(n)
		return b.String()
	}
	attr := func(n *html.Node, key string) string {
		for _, a := range n.Attr {
			if a.Key == key {
				return a.Val
			}
		}
		return ""
	}
	texts := func(tag string) []string {
		var out []string
		for _, n := range elems[tag] {
			out = append(out, text(n))
		}
		return out
	}

	t.Run("it is well-formed HTML in English", func(t *testing.T) {
		balanced(t, out)
		if !strings.HasPrefix(out, "<!DOCTYPE html>\n") || attr(elems["html"][0], "lang") != "en" {
			t.Error("no doctype or lang")
		}
		if len(elems["h1"]) != 1 || len(elems["h2"]) != 1 || text(elems["h2"][0]) != r.Target {
			t.Errorf("headings h1 %q, h2 %q", texts("h1"), texts("h2"))
		}
	})

	t.Run("it loads nothing and runs nothing", func(t *testing.T) {
		for _, tag := range []string{"script", "link", "img", "iframe", "object", "embed"} {
			if len(elems[tag]) > 0 {
				t.Errorf("a <%s> element", tag)
			}
		}
		if strings.Contains(strings.ToLower(out), "<script") || strings.Contains(out, "url(") {
			t.Error("script or a CSS url in the page")
		}
	})

	t.Run("it escapes evidence and shows it whole in <pre>", func(t *testing.T) {
		pres := texts("pre")
		if !slices.Contains(pres, "home/display/banner: <script>alert(1)</script>\\x1b[2J") || !slices.Contains(pres, longEvidence+"\n"+longToken) {
			t.Errorf("evidence in <pre>: %q", pres)
		}
	})

	t.Run("it shows the grade as a badge and every finding in a <details>", func(t *testing.T) {
		var badge string
		for _, p := range elems["p"] {
			if strings.HasPrefix(attr(p, "class"), "badge ") {
				badge = text(p)
			}
		}
		if badge != "Grade F" {
			t.Errorf("badge %q", badge)
		}
		if len(elems["details"]) != len(r.Findings) {
			t.Errorf("%d <details>, want %d", len(elems["details"]), len(r.Findings))
		}
		codes := texts("code")
		for _, f := range r.Findings {
			if !slices.Contains(codes, f.ID) {
				t.Errorf("finding %s not shown", f.ID)
			}
		}
		if got := texts("h4"); !slices.Equal(got, []string{"Critical (1)", "High (1)", "Medium (2)", "Low (1)", "Info (1)"}) {
			t.Errorf("severity headings %q", got)
		}
	})

	t.Run("it has the checks table, nmap status and a footer with the version", func(t *testing.T) {
		if rows := elems["tr"]; len(rows) != len(r.Checks)+1 {
			t.Errorf("%d table rows, want %d", len(rows), len(r.Checks)+1)
		}
		body := text(doc)
		for _, want := range []string{"no TLS port answers", "timeout after 3s", "not installed — not used", "Generated by Vigil 1.2.3 on "} {
			if !strings.Contains(body, want) {
				t.Errorf("no %q", want)
			}
		}
	})

	t.Run("several reports get a section each", func(t *testing.T) {
		out := write(t, "html", []*Report{r, {Target: "b.example"}}, FormatOptions{})
		balanced(t, out)
		if strings.Count(out, `<section class="report"`) != 2 || !strings.Contains(out, "<title>Vigil audit of 2 targets</title>") || !strings.Contains(out, "No findings.") {
			t.Error("two reports are not two sections")
		}
	})
}

func TestWriteUnknownFormat(t *testing.T) {
	var b bytes.Buffer
	err := Write(&b, "xml", []*Report{sampleReport("mqtt://a.example")}, FormatOptions{})
	if err == nil || b.Len() > 0 {
		t.Fatalf("err %v, wrote %d bytes", err, b.Len())
	}
	for _, f := range Formats {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%q does not name %s", err, f)
		}
	}
}
