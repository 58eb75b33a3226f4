package conf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides a config key:
// VIGIL_<SECTION>_<KEY>, for example VIGIL_HTTP_LISTEN for http.listen.
const EnvPrefix = "VIGIL_"

// nonConfigEnv are VIGIL_* variables that are not config keys.
var nonConfigEnv = map[string]bool{
	"VIGIL_ADMIN_PASSWORD": true, // first-start admin password
	"VIGIL_CONFIG":         true, // path of the config file
}

// Load builds the configuration: defaults, then the YAML file at path (if
// path is not empty), then VIGIL_* variables from environ. It does not
// validate; call Validate after applying command-line flags.
func Load(path string, environ []string) (*Config, error) {
	cfg := New()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := DecodeStrict(data, cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := applyEnv(cfg, environ); err != nil {
		return nil, err
	}
	if err := cfg.readCameraPasswords(environ); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readCameraPasswords reads each RTSP camera's password from the variable
// or file its config names.
func (c *Config) readCameraPasswords(environ []string) error {
	for id, cam := range c.Cameras {
		r := cam.RTSP
		if r == nil {
			continue
		}
		pw, err := Secret("cameras."+id+".rtsp.password", r.PasswordEnv, r.PasswordFile, func(name string) (string, bool) { return lookupEnv(environ, name) })
		if err != nil {
			return err
		}
		r.Password = pw
	}
	return nil
}

// lookupEnv finds name in environ (the last one wins, as in a shell).
func lookupEnv(environ []string, name string) (string, bool) {
	v, ok := "", false
	for _, kv := range environ {
		if k, val, found := strings.Cut(kv, "="); found && k == name {
			v, ok = val, true
		}
	}
	return v, ok
}

// DecodeStrict decodes YAML data into out (a pointer to a struct) strictly:
// an unknown key is an error that names the key by its full path, suggests
// the nearest allowed key and lists the keys allowed there. Keys missing
// from data keep the values out already has.
func DecodeStrict(data []byte, out any) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return err
	}
	if len(root.Content) == 0 { // empty file: defaults
		return nil
	}
	if err := checkKeys(root.Content[0], reflect.TypeOf(out), ""); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		return cleanYAMLError(err)
	}
	return nil
}

// checkKeys walks a mapping node against the struct type t.
func checkKeys(n *yaml.Node, t reflect.Type, prefix string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeOf(time.Duration(0)) {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return nil
			}
			return fmt.Errorf("line %d: %q must be a mapping of keys", n.Line, strings.TrimSuffix(prefix, "."))
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				return unknownKeyError(k, prefix, fields)
			}
			if err := checkKeys(v, f.Type, prefix+k.Value+"."); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, item := range n.Content {
				if err := checkKeys(item, t.Elem(), fmt.Sprintf("%s%d.", prefix, i)); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := checkKeys(n.Content[i+1], t.Elem(), prefix+n.Content[i].Value+"."); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func unknownKeyError(k *yaml.Node, prefix string, fields map[string]reflect.StructField) error {
	allowed := make([]string, 0, len(fields))
	for name := range fields {
		allowed = append(allowed, name)
	}
	sort.Strings(allowed)
	msg := fmt.Sprintf("line %d: unknown key %q", k.Line, prefix+k.Value)
	if s := closest(k.Value, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", prefix+s)
	}
	where := "at the top level"
	if prefix != "" {
		where = "in " + strings.TrimSuffix(prefix, ".")
	}
	return fmt.Errorf("%s; allowed %s: %s", msg, where, strings.Join(allowed, ", "))
}

// yamlFields maps yaml key names to struct fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}

// closest returns the allowed key nearest to s by edit distance, if close.
func closest(s string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(s, a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// cleanYAMLError drops the library's "yaml: unmarshal errors:" preamble.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	return err
}

// applyEnv applies VIGIL_<SECTION>_<KEY> variables. A VIGIL_* variable that
// names no key is an error, so that a typo does not pass silently.
func applyEnv(cfg *Config, environ []string) error {
	root := reflect.ValueOf(cfg).Elem()
	sections := yamlFields(root.Type())
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || nonConfigEnv[name] {
			continue
		}
		rest := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
		section, key, _ := strings.Cut(rest, "_")
		sf, ok := sections[section]
		if !ok || sf.Type.Kind() != reflect.Struct {
			return fmt.Errorf("environment variable %s names no config section (sections: %s)", name, strings.Join(EnvKeys(), ", "))
		}
		fields := yamlFields(sf.Type)
		f, ok := fields[key]
		if !ok {
			return fmt.Errorf("environment variable %s names no key in section %q", name, section)
		}
		field := root.FieldByIndex(sf.Index).FieldByIndex(f.Index)
		if err := setScalar(field, value); err != nil {
			return fmt.Errorf("environment variable %s (%s.%s): %w", name, section, key, err)
		}
	}
	return nil
}

// EnvKeys lists the environment variables that override scalar config keys.
func EnvKeys() []string {
	var out []string
	t := reflect.TypeOf(Config{})
	for sname, sf := range yamlFields(t) {
		if sf.Type.Kind() != reflect.Struct {
			continue
		}
		for kname, f := range yamlFields(sf.Type) {
			if isScalar(f.Type) {
				out = append(out, EnvPrefix+strings.ToUpper(sname+"_"+kname))
			}
		}
	}
	sort.Strings(out)
	return out
}

func isScalar(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

func setScalar(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a duration like 30s or 5m: %w", err)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("want a whole number, got %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("want a number, got %q", s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		var items []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				items = append(items, p)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
