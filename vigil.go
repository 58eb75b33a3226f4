// Package vigil holds what every part of Vigil shares: the application error
// type that the edges (HTTP, CLI, MQTT) map to user-facing messages, and the
// naming rule for sites and devices.
package vigil

import (
	"errors"
	"fmt"
)

// Application error codes. The HTTP layer maps each to a status code.
const (
	EInvalid      = "invalid"      // the request is malformed or fails validation
	ENotFound     = "not_found"    // the named thing does not exist
	EConflict     = "conflict"     // the thing already exists or is in use
	EUnauthorized = "unauthorized" // missing or wrong credentials
	EForbidden    = "forbidden"    // authenticated but not allowed
	EUnavailable  = "unavailable"  // a dependency is down; try again later
	EInternal     = "internal"     // a bug or an unexpected failure
)

// Error is an error meant for users: Message is safe to show to a client,
// unlike the wrapped errors around it, which may carry internal detail.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the user-facing message of the first *Error in err's
// chain, or a generic message that reveals nothing of the cause.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ValidName reports whether s is usable as a site or device name: 1-64
// characters of letters, digits, '-', '_' and '.', so that it fits in one
// MQTT topic level and one URL path segment without escaping.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// Reserved reports whether s is one of Vigil's own topic levels under
// vigil/ (vigil/agents/..., vigil/<site>/mode, vigil/<site>/alerts), which
// no site, device or device account may be named: a device called "mode"
// would otherwise own vigil/<site>/mode/set, where sites are disarmed.
func Reserved(s string) bool {
	switch s {
	case "agents", "mode", "alerts":
		return true
	}
	return false
}
