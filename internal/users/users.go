// Package users holds Vigil's accounts: roles, bcrypt password hashes and
// per-user MQTT topic ACLs in the style of Mosquitto's acl_file (patterns
// with + and #, %u for the username and %c for the client id).
package users

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/vigilhq/vigil"
)

// Roles.
const (
	// RoleAdmin may do everything: the API, and publish and subscribe to
	// every topic unless its ACL says otherwise.
	RoleAdmin = "admin"
	// RoleViewer may read through the API and subscribe over MQTT.
	RoleViewer = "viewer"
	// RoleDevice is an MQTT-only account for a device.
	RoleDevice = "device"
)

// Roles lists the valid roles.
var Roles = []string{RoleAdmin, RoleViewer, RoleDevice}

// User is an account. Publish and Subscribe are MQTT topic patterns the
// user may publish to and subscribe to.
type User struct {
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	PasswordHash string    `json:"-"`
	Publish      []string  `json:"publish"`
	Subscribe    []string  `json:"subscribe"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// DefaultACL returns the ACL a new user of role gets when none is given.
func DefaultACL(role string) (publish, subscribe []string) {
	switch role {
	case RoleAdmin:
		return []string{"#"}, []string{"#"}
	case RoleViewer:
		return nil, []string{"vigil/#", "sensors/#", "$SYS/#"}
	default: // device: its own subtree under any site
		// Not the paper's sensors/<type>: there the payload's sensor_id
		// names the device, so any device could write any other's
		// readings. The paper's script logs in anonymously (loopback); an
		// account that must use those topics is given them explicitly.
		return []string{"vigil/+/%u/#"}, []string{"vigil/+/%u/#"}
	}
}

// Validate checks the user's name, role and ACL patterns.
func (u *User) Validate() error {
	if !vigil.ValidName(u.Name) {
		return vigil.Errorf(vigil.EInvalid, "user name %q must be 1-64 letters, digits, '-', '_' or '.'", u.Name)
	}
	if u.Role == RoleDevice && vigil.Reserved(u.Name) {
		return vigil.Errorf(vigil.EInvalid, "a device cannot be named %q: Vigil uses that name in its own topics", u.Name)
	}
	if !slices.Contains(Roles, u.Role) {
		return vigil.Errorf(vigil.EInvalid, "role %q is not one of %s", u.Role, strings.Join(Roles, ", "))
	}
	for _, p := range append(slices.Clone(u.Publish), u.Subscribe...) {
		if !ValidFilter(p) {
			return vigil.Errorf(vigil.EInvalid, "ACL pattern %q is not a valid MQTT topic filter", p)
		}
	}
	return nil
}

// CanPublish reports whether the user, connected as clientID, may publish
// to topic.
func (u *User) CanPublish(topic, clientID string) bool {
	for _, p := range u.Publish {
		if MatchTopic(u.expand(p, clientID), topic) {
			return true
		}
	}
	return false
}

// CanSubscribe reports whether the user may subscribe to filter: every
// topic the filter can match must be allowed by one of the patterns.
func (u *User) CanSubscribe(filter, clientID string) bool {
	for _, p := range u.Subscribe {
		if FilterCovers(u.expand(p, clientID), filter) {
			return true
		}
	}
	return false
}

// expand substitutes %u and %c. A username or client id that contains a
// wildcard or separator never expands into a pattern that matches more.
func (u *User) expand(pattern, clientID string) string {
	if !strings.Contains(pattern, "%") {
		return pattern
	}
	safe := func(s string) string {
		if s == "" || strings.ContainsAny(s, "+#/") || vigil.Reserved(s) {
			return "\x00" // matches no topic level
		}
		return s
	}
	r := strings.NewReplacer("%u", safe(u.Name), "%c", safe(clientID))
	return r.Replace(pattern)
}

// HashPassword hashes a password with bcrypt at the given cost.
func HashPassword(password string, cost int) (string, error) {
	if len(password) < 8 {
		return "", vigil.Errorf(vigil.EInvalid, "password must be at least 8 characters")
	}
	if len(password) > 72 {
		return "", vigil.Errorf(vigil.EInvalid, "password must be at most 72 bytes (a bcrypt limit)")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether password matches the bcrypt hash.
func CheckPassword(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// RandomPassword returns a random password of 24 URL-safe characters
// (144 bits).
func RandomPassword() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
