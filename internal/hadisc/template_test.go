package hadisc

import (
	"strings"
	"testing"
)

// The templates the projects publish (internal/e2e/testdata/devices) and
// those Home Assistant's documentation shows, against one payload.
func TestTemplatesTheProjectsPublish(t *testing.T) {
	payload := `{"temperature":23.45,"occupancy":true,"contact":false,"x":"7","battery":100,"DS18B20":{"Temperature":21.3},` +
		`"AM2301":{"Temperature":21.3,"Humidity":48.7},"ENERGY":{"Power":[1,2]},"state":"online","update":{"state":"idle"},"RSSI":"76"}`
	for _, c := range []struct{ tpl, want string }{
		{`{{ value_json.temperature }}`, "23.45"},
		{`{{ value_json['x'] }}`, "7"},
		{`{{ value_json["temperature"] }}`, "23.45"},
		{`{{ value_json.battery }}`, "100"},
		{`{{ value_json.x | float }}`, "7.0"},
		{`{{ value_json.temperature | round(1) }}`, "23.4"}, // 23.45 is 23.4499... in binary, as Python rounds it
		{`{{ value_json.temperature | round }}`, "23"},
		{`{{ value_json.temperature | int }}`, "23"},
		{`{{ value_json.temperature | is_defined }}`, "23.45"},
		{`{{ 'ON' if value_json.occupancy else 'OFF' }}`, "ON"},
		{`{{ value_json.contact }}`, "False"},
		{`{{ value_json.DS18B20.Temperature }}`, "21.3"},
		{`{{value_json['AM2301'].Temperature}}`, "21.3"},
		{`{{ value_json['DS18B20']['Temperature'] }}`, "21.3"},
		{`{{ value_json.ENERGY.Power[0] }}`, "1"},
		{`{% if value_json.occupancy %}ON{% else %}OFF{% endif %}`, "ON"},
		{`{% if value_json["contact"] %}true{% else %}false{% endif %}`, "false"},
		{`{%- if value_json.missing is defined -%} a {%- elif value_json.x == '7' -%} b {%- else -%} c {%- endif -%}`, "b"},
		{`{{ (value_json.temperature * 10) | round(0) }}`, "234"},
		{`{{ value_json.temperature | float(0) }}`, "23.45"},
		{`{{ value_json.nope | float(0) }}`, "0"},
		{`{{ value_json.x | int + 1 }}`, "8"},
		{`{{ value_json.occupancy | lower }}`, "true"},
		{`{{ "%0.1f" | format(value_json.temperature) }}`, "23.4"},
		{`{{ value_json.state }}`, "online"},
		{`{{ value_json['update'].get('progress', 'null') | lower }}`, "null"},
		{`{{ value_json.missing | default('None') }}`, "None"},
		{`{{ value_json['RSSI'] }}`, "76"},
		{`{% set values = {'idle': 0, 'busy': 1} %}{{ values[value_json.update.state] }}`, "0"},
		{`{{ "running" in value_json.update.state }}`, "False"},
		{`{{ value_json.temperature / 2 }}`, "11.725"},
		{`{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }}`, "3 -4 2"},
		{`{{ value_json | tojson | length > 10 }}`, "True"},
		{`{{ value }}`, payload},
		{`{{ value_json.missing }}`, ""},
		{`plain`, "plain"},
		{`{{ "a,b,c".split(",") | join("-") }}`, "a-b-c"},
	} {
		got, err := Render(c.tpl, []byte(payload))
		if err != nil {
			t.Errorf("%s: %v", c.tpl, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s = %q, want %q", c.tpl, got, c.want)
		}
	}
}

// What a template cannot do is an error that says so, not a crash or a
// wrong value.
func TestTemplateErrorsSayWhy(t *testing.T) {
	for _, c := range []struct{ tpl, payload, want string }{
		{`{{ value_json.missing | is_defined }}`, `{"a":1}`, "missing is undefined"},
		{`{{ value_json.a.b }}`, `not json`, "value_json is undefined"},
		{`{{ value_json.a | float }}`, `{"a":"x"}`, `float got invalid input "x"`},
		{`{% for i in range(10) %}x{% endfor %}`, `{}`, "{% for %} is not supported"},
		{`{{ range(10) }}`, `{}`, "function range is not supported"},
		{`{{ ''.__class__ }}`, `{}`, "attribute __class__ is not allowed"},
		{`{{ 1 / 0 }}`, `{}`, "division by zero"},
		{`{{ 5 % 0 }}`, `{}`, "division by zero"},
		{`{{ 'a' * 100000000 }}`, `{}`, "too long"},
		{`{{ 9**9 }}`, `{}`, "** is not supported"},
		{`{{ value_json.x | center(100) }}`, `{}`, "filter center is not supported"},
		{`{% if 1 %}x`, `{}`, "without {% endif %}"},
		{`{{ 1 `, `{}`, "not closed"},
		{`{{ ` + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000) + ` }}`, `{}`, "at most 4096"},
		{`{{ ` + strings.Repeat("(", 500) + "1" + strings.Repeat(")", 500) + ` }}`, `{}`, "nests too deep"},
		{`{{ value_json` + strings.Repeat(".a", 1000) + ` }}`, `{}`, ""},
		{strings.Repeat(`{{ "%s" | format(value) ~ value ~ value }}`, 10), strings.Repeat("x", 60000), "too long"},
	} {
		_, err := Render(c.tpl, []byte(c.payload))
		if err == nil {
			t.Errorf("%.60s: no error", c.tpl)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.60s: error %q, want it to say %q", c.tpl, err, c.want)
		}
	}
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{`{{ value_json.temperature }}`, `{{ value_json['x'] | float(0) | round(2) }}`,
		`{% if value_json.a %}ON{% elif value_json.b is defined %}X{% else %}OFF{% endif %}`,
		`{{ 'ON' if value_json.occupancy else 'OFF' }}`, `{% set v = {'a': [1, 2.5, "x"]} %}{{ v.a[1] * 2 ~ v.get('b', none) }}`,
		`{{ "%05.1f|%s|%d" | format(value_json.t, value, 3) }}`, `{{ value.split(',')[0] | replace('a','bb') | upper }}`,
		`{{- (value_json.t // 3 - -2) % 7 | abs | string | length -}}`} {
		f.Add(s, []byte(`{"temperature":21.5,"x":"7","a":null,"occupancy":true,"t":-12}`))
	}
	f.Fuzz(func(t *testing.T, tpl string, payload []byte) {
		out, err := Render(tpl, payload)
		if err == nil && len(out) > maxOutput+maxTemplateSource {
			t.Fatalf("output of %d bytes", len(out))
		}
	})
}

// What the review found: Python's chained comparisons, an index after a
// dot, ~ binding tighter than +, round's methods as Home Assistant has
// them, and nothing a template makes growing exponentially or crashing.
func TestTemplateSemanticsAndBounds(t *testing.T) {
	for _, c := range []struct{ tpl, want string }{
		{`{{ 0 < value_json.x < 5 }}`, "False"},
		{`{{ 0 < value_json.y < 5 }}`, "True"},
		{`{{ value_json.list.0 }}`, "a"},
		{`{{ value_json.list.1 ~ 2 * 3 }}`, "b6"},
		{`{{ 1.26 | round(1, 'half') }}`, "1.5"},
		{`{{ 1.26 | round(1, 'sideways') }}`, "1.3"},
		{`{{ 2.5 | round }}`, "2"},
	} {
		got, err := Render(c.tpl, []byte(`{"x":10,"y":3,"list":["a","b"]}`))
		if err != nil || got != c.want {
			t.Errorf("%s = %q, %v; want %q", c.tpl, got, err, c.want)
		}
	}
	doubling := `{% set a = [value, value] %}` + strings.Repeat(`{% set a = [a, a] %}`, 22) + `{{ a == a }}`
	for _, tpl := range []string{`{{ 'ab' * 9223372036854775807 }}`, doubling, `{{ [1] + [2] * 100 }}`} {
		if _, err := Render(tpl, []byte(strings.Repeat("x", 1000))); err == nil {
			t.Errorf("%.60s: no error", tpl)
		}
	}
}
