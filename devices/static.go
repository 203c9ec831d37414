package devices

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/telemetryd/telemetryd/telemetry"
)

// StaticTokens authenticates devices against a fixed token list, for
// development and tests: one "<device-id> <token>" pair per line, '#'
// starting a comment. Tokens are kept only as SHA-256 hashes.
type StaticTokens struct {
	byHash map[[sha256.Size]byte]telemetry.DeviceID
	ids    map[telemetry.DeviceID]bool
}

// ParseStaticTokens reads a token list.
func ParseStaticTokens(r io.Reader) (*StaticTokens, error) {
	s := &StaticTokens{byHash: make(map[[sha256.Size]byte]telemetry.DeviceID), ids: make(map[telemetry.DeviceID]bool)}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 2 {
			return nil, fmt.Errorf("devices: token list line %d: want \"<device-id> <token>\"", n)
		}
		s.byHash[sha256.Sum256([]byte(parts[1]))] = telemetry.DeviceID(parts[0])
		s.ids[telemetry.DeviceID(parts[0])] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("devices: reading token list: %w", err)
	}
	return s, nil
}

// LoadStaticTokens reads a token list file.
func LoadStaticTokens(path string) (*StaticTokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	defer f.Close()
	return ParseStaticTokens(f)
}

// AuthenticateDevice returns the device that token belongs to.
func (s *StaticTokens) AuthenticateDevice(_ context.Context, token string) (telemetry.DeviceID, error) {
	if token == "" {
		return "", fmt.Errorf("devices: no token: %w", telemetry.ErrUnauthorized)
	}
	// Looking up the SHA-256 of the token, never the token itself, means
	// lookup timing tells an attacker nothing about stored tokens.
	if id, ok := s.byHash[sha256.Sum256([]byte(token))]; ok {
		return id, nil
	}
	return "", fmt.Errorf("devices: unknown token: %w", telemetry.ErrUnauthorized)
}

// Active reports whether id is in the list.
func (s *StaticTokens) Active(id telemetry.DeviceID) bool {
	return s.ids[id]
}
