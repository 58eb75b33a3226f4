package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/internal/alert"
	"github.com/vigilhq/vigil/internal/cluster"
	"github.com/vigilhq/vigil/internal/coord"
	"github.com/vigilhq/vigil/internal/hadisc"
	"github.com/vigilhq/vigil/internal/hub"
	"github.com/vigilhq/vigil/internal/notify"
	"github.com/vigilhq/vigil/internal/users"
)

// Stand-ins for the optional dependencies: with them routes() registers
// every route. The tests here never reach a handler that calls them (a
// call would panic on the nil interface inside).
type (
	fakeDevices     struct{ Devices }
	fakeIntrusion   struct{ Intrusion }
	fakeSites       struct{ SiteControl }
	fakeCameras     struct{ cameraSource } // Cameras has a method Cameras
	fakePlans       struct{ PlanControl }
	fakeUsers       struct{ UserAdmin }
	fakeNotifier    struct{ Notifier }
	fakeNotifyStore struct{ notify.Store }
	fakeSecurity    struct{ Security }
)

type cameraSource = Cameras

// viewerAuth takes any password and says the user is a viewer.
type viewerAuth struct{}

func (viewerAuth) CountFailure(string, string) {}

func (viewerAuth) Login(_ context.Context, _, name, _ string) (*users.User, error) {
	return &users.User{Name: name, Role: users.RoleViewer}, nil
}

// allDeps returns Deps with every dependency set, so that every route is
// registered.
func allDeps(t *testing.T) Deps {
	t.Helper()
	d := Deps{
		Devices:  fakeDevices{},
		Auth:     viewerAuth{},
		Health:   func(context.Context) error { return nil },
		System:   func() System { return System{} },
		Gatherer: prometheus.NewRegistry(),

		Hub:      &hub.Hub{},
		Sessions: &users.Sessions{},

		Intrusion:   fakeIntrusion{},
		Sites:       fakeSites{},
		Agents:      func() coord.View { return coord.View{} },
		PlanOf:      func(string) string { return "free" },
		ClipStorage: t.TempDir(),
		Cameras:     fakeCameras{},
		CameraTest:  func(context.Context, string, string) (any, error) { return map[string]bool{"reachable": false}, nil },
		Plans:       fakePlans{},

		Users:      fakeUsers{},
		Forget:     func(string) {},
		BcryptCost: 4,

		Notifier:    fakeNotifier{},
		NotifyStore: fakeNotifyStore{},
		Alerts:      func() []alert.Alert { return []alert.Alert{} },
		Cluster:     func(context.Context) ([]cluster.Node, error) { return []cluster.Node{}, nil },
		Web:         http.NotFoundHandler(),
		Security:    fakeSecurity{},
		Discovery:   fakeDiscovery{},

		TrustedProxies: []*net.IPNet{},
	}
	// A dependency added to Deps may gate new routes: it must be set here
	// too, or those routes would escape TestOpenAPIDocumentsEveryRoute.
	v := reflect.ValueOf(d)
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.Interface, reflect.Func, reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan:
			if f.IsNil() {
				t.Fatalf("allDeps leaves Deps.%s nil; set it so that the routes it enables are registered", v.Type().Field(i).Name)
			}
		}
	}
	return d
}

func testServer(t *testing.T) *Server {
	return &Server{deps: allDeps(t), log: slog.New(slog.DiscardHandler), closing: make(chan struct{})}
}

// loadOpenAPI parses the embedded document.
func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	return doc
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operation is one documented method and path.
type operation struct {
	method, path string // method in upper case
	op, item     map[string]any
}

func (o operation) String() string { return o.method + " " + o.path }

// operations lists the document's operations.
func operations(t *testing.T, doc map[string]any) []operation {
	t.Helper()
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		t.Fatal("openapi.json has no paths")
	}
	var ops []operation
	for path, v := range paths {
		item := v.(map[string]any)
		for _, m := range methods {
			if op, ok := item[m].(map[string]any); ok {
				ops = append(ops, operation{method: strings.ToUpper(m), path: path, op: op, item: item})
			}
		}
	}
	slices.SortFunc(ops, func(a, b operation) int { return strings.Compare(a.String(), b.String()) })
	return ops
}

// public reports whether an operation needs no credentials.
func (o operation) public() bool {
	sec, ok := o.op["security"].([]any)
	return ok && len(sec) == 0
}

// resolve follows a local $ref into the components.
func resolve(doc map[string]any, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#/components/") {
		return nil, false
	}
	var cur any = doc
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// deref returns v, or what it refers to if it is a $ref.
func deref(doc map[string]any, v any) map[string]any {
	m, _ := v.(map[string]any)
	if ref, ok := m["$ref"].(string); ok {
		r, _ := resolve(doc, ref)
		m, _ = r.(map[string]any)
	}
	return m
}

func TestOpenAPIIsValid(t *testing.T) {
	doc := loadOpenAPI(t)
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", doc["openapi"])
	}
	if info, _ := doc["info"].(map[string]any); info["title"] != "Vigil API" || info["version"] == nil {
		t.Errorf("info = %v, want title Vigil API and a version", info)
	}

	t.Run("every $ref resolves and every component is used", func(t *testing.T) {
		used := map[string]bool{}
		var walk func(at string, v any)
		walk = func(at string, v any) {
			switch v := v.(type) {
			case map[string]any:
				if ref, ok := v["$ref"].(string); ok {
					if _, ok := resolve(doc, ref); !ok {
						t.Errorf("%s: $ref %q resolves to nothing in components", at, ref)
					}
					used[ref] = true
				}
				for k, x := range v {
					walk(at+"/"+k, x)
				}
			case []any:
				for _, x := range v {
					walk(at+"[]", x)
				}
			}
		}
		walk("#", doc)
		comps := doc["components"].(map[string]any)
		for _, kind := range []string{"schemas", "responses", "parameters", "headers"} {
			for name := range comps[kind].(map[string]any) {
				if !used["#/components/"+kind+"/"+name] {
					t.Errorf("components/%s/%s is never used", kind, name)
				}
			}
		}
	})

	schemes := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	t.Run("the session cookie scheme names the cookie the server sets", func(t *testing.T) {
		if c := schemes["cookieAuth"].(map[string]any); c["in"] != "cookie" || c["name"] != SessionCookie {
			t.Errorf("cookieAuth = %v, want the cookie %s", c, SessionCookie)
		}
		if b := schemes["basicAuth"].(map[string]any); b["type"] != "http" || b["scheme"] != "basic" {
			t.Errorf("basicAuth = %v, want HTTP Basic", b)
		}
	})

	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	ids := map[string]string{}
	for _, o := range operations(t, doc) {
		if s, _ := o.op["summary"].(string); s == "" {
			t.Errorf("%s has no summary", o)
		}
		id, _ := o.op["operationId"].(string)
		if prev, dup := ids[id]; id == "" || dup {
			t.Errorf("%s: operationId %q is empty or also %s's", o, id, prev)
		}
		ids[id] = o.String()
		responses, _ := o.op["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s documents no response", o)
		}
		// Parameters: of the path item and of the operation.
		params := map[string]bool{} // "in name"
		for _, list := range []any{o.item["parameters"], o.op["parameters"]} {
			ps, _ := list.([]any)
			for _, p := range ps {
				p := deref(doc, p)
				if p["in"] == "path" && p["required"] != true {
					t.Errorf("%s: path parameter %v is not required", o, p["name"])
				}
				params[p["in"].(string)+" "+p["name"].(string)] = true
			}
		}
		for _, m := range pathParam.FindAllStringSubmatch(o.path, -1) {
			if !params["path "+m[1]] {
				t.Errorf("%s: path parameter {%s} is not declared", o, m[1])
			}
		}
		for p := range params {
			if name, ok := strings.CutPrefix(p, "path "); ok && !strings.Contains(o.path, "{"+name+"}") {
				t.Errorf("%s declares path parameter %s that is not in the path", o, name)
			}
		}
		if o.public() {
			continue
		}
		for _, code := range []string{"401", "403", "429"} {
			if responses[code] == nil {
				t.Errorf("%s needs authentication but does not document %s", o, code)
			}
		}
		if o.method != "GET" && !params["header X-CSRF-Token"] {
			t.Errorf("%s changes state but does not take X-CSRF-Token", o)
		}
	}
}

// registeredRoutes returns the "METHOD /path" patterns of the API that
// routes() registers with every dependency present: those under /api/
// but the catch-all, /healthz and /metrics. The rest (/debug/pprof/, the
// web UI's pages) is not part of the API.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, p := range testServer(t).routes().patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			method, path = "", p
		}
		if p == "/api/" || !strings.HasPrefix(path, "/api/") && path != "/healthz" && path != "/metrics" {
			continue
		}
		if method == "" {
			t.Errorf("route %q takes every method; give it one so that it can be documented", p)
			continue
		}
		out = append(out, method+" "+path)
	}
	slices.Sort(out)
	return out
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	routes := registeredRoutes(t)
	var documented []string
	for _, o := range operations(t, loadOpenAPI(t)) {
		documented = append(documented, o.String())
	}
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("%s is served but not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("%s is in openapi.json but not served", d)
		}
	}
	if len(routes) < 40 {
		t.Errorf("only %d routes registered; are some dependencies missing from allDeps?", len(routes))
	}
}

// concrete fills a path template's parameters.
func concrete(path string) string {
	return regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(path, "x")
}

func TestOpenAPISecurityMatchesTheServer(t *testing.T) {
	srv := httptest.NewServer(testServer(t).routes())
	defer srv.Close()
	do := func(t *testing.T, o operation, viewer bool) *http.Response {
		t.Helper()
		req, err := http.NewRequest(o.method, srv.URL+concrete(o.path), nil)
		if err != nil {
			t.Fatal(err)
		}
		if viewer {
			req.SetBasicAuth("viewer", "password")
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, o := range operations(t, loadOpenAPI(t)) {
		t.Run(o.String()+" without credentials", func(t *testing.T) {
			resp := do(t, o, false)
			switch {
			case o.public() && resp.StatusCode == http.StatusUnauthorized:
				t.Errorf("documented as public, answers 401")
			case !o.public() && resp.StatusCode != http.StatusUnauthorized:
				t.Errorf("documented as needing credentials, answers %d", resp.StatusCode)
			}
		})
		if desc, _ := o.op["description"].(string); strings.Contains(desc, "Admins only.") {
			t.Run(o.String()+" as a viewer is refused", func(t *testing.T) {
				if resp := do(t, o, true); resp.StatusCode != http.StatusForbidden {
					t.Errorf("documented as admins only, answers a viewer %d", resp.StatusCode)
				}
			})
		}
	}
}

func TestOpenAPIIsServedWithoutCredentials(t *testing.T) {
	srv := httptest.NewServer(testServer(t).routes())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
	}
	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, onDisk) {
		t.Errorf("served %d bytes that differ from openapi.json's %d", len(body), len(onDisk))
	}
}

type fakeDiscovery struct{}

func (fakeDiscovery) Entities() ([]hadisc.EntityView, []hadisc.Problem, bool) { return nil, nil, false }
func (fakeDiscovery) Entity(string) (hadisc.EntityView, bool)                 { return hadisc.EntityView{}, false }
func (fakeDiscovery) Place(context.Context, string, hadisc.Placement) (hadisc.EntityView, error) {
	return hadisc.EntityView{}, nil
}
