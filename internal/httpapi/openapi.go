package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 description of this API, written by hand;
// TestOpenAPIDocumentsEveryRoute keeps it in step with routes().
//
//go:embed openapi.json
var openAPI []byte

// serveOpenAPI: GET /api/v1/openapi.json. It needs no user, like /healthz:
// it describes the API and says nothing about the installation.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(openAPI)
}

// routeMux is a ServeMux that remembers the patterns registered on it, so
// that a test can compare them with the OpenAPI document.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

// Handle registers h for pattern.
func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

// HandleFunc registers h for pattern.
func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}
