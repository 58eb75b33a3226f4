// Package rnd makes the random identifiers Vigil uses for client ids,
// probe topics, stream tokens and generated passwords.
package rnd

import (
	"crypto/rand"
	"encoding/hex"
)

// Hex returns n random bytes from crypto/rand as 2n hex digits.
func Hex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails: crypto/rand panics rather than return an error
	return hex.EncodeToString(b)
}
