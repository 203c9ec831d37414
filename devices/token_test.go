package devices

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/telemetryd/telemetryd/internal/testsupport"
)

func TestNewTokenFormat(t *testing.T) {
	seen := map[string]bool{}
	for _, prefix := range []string{DeviceTokenPrefix, ViewerTokenPrefix} {
		for range 100 {
			tok := NewToken(prefix)
			if !strings.HasPrefix(tok, prefix) {
				t.Fatalf("token %q lacks prefix %q", tok, prefix)
			}
			raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, prefix))
			if err != nil || len(raw) != 32 {
				t.Fatalf("token %q: want base64url of 32 bytes, got %d bytes, %v", tok, len(raw), err)
			}
			if seen[tok] {
				t.Fatalf("token %q issued twice", tok)
			}
			seen[tok] = true
		}
	}
}

func TestHashToken(t *testing.T) {
	a, b := HashToken("tdv_a"), HashToken("tdv_b")
	if !a.Equal(HashToken("tdv_a")) || a.Equal(b) {
		t.Fatal("HashToken/Equal disagree")
	}
	// Known SHA-256 vector, so that stored hashes stay compatible.
	if got := base64.StdEncoding.EncodeToString(a[:]); got != "QQ6FOfoYr1ypBIm7UTGHdjilMs+viQyot0OTICT+hAk=" {
		t.Fatalf("sha256(tdv_a) = %s", got)
	}
}

// mosquitto_passwd 2.0.11 wrote this line for password "secret".
const mosquittoPasswdVector = "$7$101$dsOa2Y8ARAc8X3RF$ZxHtKSGb1g0fll7ef5hoIc4KGVAOfh7igYJKZMK4HYrAq6Z4nxPuhi73Qgnja1jlCeMYZ+bmU/YVEAbktFwYkQ=="

func TestMosquittoHashMatchesMosquittoPasswd(t *testing.T) {
	tests := []struct {
		name, hash, password string
		want                 bool
	}{
		{"vector right password", mosquittoPasswdVector, "secret", true},
		{"vector wrong password", mosquittoPasswdVector, "Secret", false},
		{"ours right password", MosquittoHash("tdv_x"), "tdv_x", true},
		{"ours wrong password", MosquittoHash("tdv_x"), "tdv_y", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := VerifyMosquittoHash(tt.hash, tt.password)
			if err != nil || ok != tt.want {
				t.Fatalf("VerifyMosquittoHash = %v, %v; want %v", ok, err, tt.want)
			}
		})
	}
	// Same salt, same output as mosquitto_passwd.
	salt, _ := base64.StdEncoding.DecodeString("dsOa2Y8ARAc8X3RF")
	if got := mosquittoHash("secret", salt, 101); got != mosquittoPasswdVector {
		t.Fatalf("mosquittoHash = %s\nwant            %s", got, mosquittoPasswdVector)
	}
	if h := MosquittoHash("p"); !strings.HasPrefix(h, "$7$101$") || len(strings.Split(h, "$")) != 5 {
		t.Fatalf("MosquittoHash format %q", h)
	}
	for _, bad := range []string{"", "$6$abc", "$7$x$AAAA$AAAA", "$7$101$!!$AAAA"} {
		if _, err := VerifyMosquittoHash(bad, "p"); err == nil {
			t.Errorf("VerifyMosquittoHash(%q) accepted a malformed hash", bad)
		}
	}
}

// TestMosquittoPasswdAgreesWithUs checks a fresh hash (random salt) from
// the installed mosquitto_passwd against our implementation. The broker
// itself accepting our hashes is tested in cmd/telemetryd.
func TestMosquittoPasswdAgreesWithUs(t *testing.T) {
	bin := testsupport.Binary(t, "", "it comes with mosquitto (make tools)", "mosquitto_passwd")
	f := filepath.Join(t.TempDir(), "pw")
	if out, err := exec.Command(bin, "-c", "-b", f, "u", "tdv_pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	line, _ := os.ReadFile(f)
	_, hash, _ := strings.Cut(strings.TrimSpace(string(line)), ":")
	if ok, err := VerifyMosquittoHash(hash, "tdv_pw"); !ok || err != nil {
		t.Fatalf("our verification of mosquitto_passwd's %q: %v %v", hash, ok, err)
	}
}
