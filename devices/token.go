package devices

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Token prefixes make a leaked credential recognisable (secret scanners,
// support tickets) and let the wrong kind of token be refused before any
// lookup.
const (
	DeviceTokenPrefix = "tdv_"
	ViewerTokenPrefix = "tvw_"
)

// tokenBytes of randomness per token: 256 bits.
const tokenBytes = 32

// TokenHash is the SHA-256 of a token, the only form in which a token is
// kept. A 256-bit random token needs no salt or slow hash: it cannot be
// guessed, only stolen, and the hash is useless to a thief.
type TokenHash [sha256.Size]byte

// HashToken returns the SHA-256 of token.
func HashToken(token string) TokenHash { return sha256.Sum256([]byte(token)) }

// Equal compares in constant time.
func (h TokenHash) Equal(o TokenHash) bool { return subtle.ConstantTimeCompare(h[:], o[:]) == 1 }

// NewToken returns a fresh token: prefix + base64url (no padding) of 32
// bytes from crypto/rand.
func NewToken(prefix string) string {
	b := make([]byte, tokenBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Mosquitto 2.0 password hashes ("$7$"): PBKDF2-HMAC-SHA512 with the
// parameters mosquitto_passwd uses by default. The iteration count matters
// little for 256-bit random tokens; 101 keeps the broker's CONNECT cheap.
const (
	mosquittoIterations = 101
	mosquittoSaltLen    = 12
	mosquittoKeyLen     = 64
)

// MosquittoHash hashes password the way mosquitto_passwd 2.0 does:
// "$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>", ready to follow
// "username:" in a password_file.
func MosquittoHash(password string) string {
	salt := make([]byte, mosquittoSaltLen)
	_, _ = rand.Read(salt)
	return mosquittoHash(password, salt, mosquittoIterations)
}

func mosquittoHash(password string, salt []byte, iterations int) string {
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, mosquittoKeyLen)
	if err != nil { // only for parameters out of FIPS bounds; ours are fixed
		panic("devices: pbkdf2: " + err.Error())
	}
	return "$7$" + strconv.Itoa(iterations) + "$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(key)
}

// VerifyMosquittoHash checks password against a "$7$" hash; it is what the
// broker does, here for tests and diagnostics.
func VerifyMosquittoHash(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "7" {
		return false, fmt.Errorf("devices: not a $7$ mosquitto hash")
	}
	iter, err := strconv.Atoi(parts[2])
	if err != nil || iter < 1 {
		return false, fmt.Errorf("devices: bad iteration count in mosquitto hash")
	}
	salt, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil {
		return false, fmt.Errorf("devices: bad salt in mosquitto hash: %w", err)
	}
	want := mosquittoHash(password, salt, iter)
	return subtle.ConstantTimeCompare([]byte(want), []byte(hash)) == 1, nil
}
