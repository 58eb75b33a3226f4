package ingest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
)

// sealer is the AEAD that seals camera passwords for an agent, its key
// derived from the agent's MQTT password.
func sealer(agentPassword string) (cipher.AEAD, error) {
	k := sha256.Sum256([]byte("vigil camera password v1\x00" + agentPassword))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts a camera's password for the agent whose MQTT password is
// agentPassword (AES-256-GCM, a random nonce): base64 of nonce and
// ciphertext.
func Seal(agentPassword, password string) (string, error) {
	if agentPassword == "" {
		return "", errors.New("the agent has no password to seal with")
	}
	gcm, err := sealer(agentPassword)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(gcm.Seal(nonce, nonce, []byte(password), nil)), nil
}

// Unseal decrypts what Seal made with the same agent password.
func Unseal(agentPassword, sealed string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return "", errors.New("the sealed camera password is not base64")
	}
	gcm, err := sealer(agentPassword)
	if err != nil {
		return "", err
	}
	if len(b) < gcm.NonceSize() {
		return "", errors.New("the sealed camera password is too short")
	}
	p, err := gcm.Open(nil, b[:gcm.NonceSize()], b[gcm.NonceSize():], nil)
	if err != nil {
		return "", errors.New("the camera password was not sealed for this agent")
	}
	return string(p), nil
}
