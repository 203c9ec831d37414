package storage

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseFieldKeys(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		header  string
		body    string
		want    string // fmt of the map, or the error substring after "error: "
		wantErr bool
	}{
		{"types", 200, "", `{"results":[{"statement_id":0,"series":[
			{"name":"env","columns":["fieldKey","fieldType"],"values":[["t","float"],["n","integer"],["t","integer"]]},
			{"name":"power","columns":["fieldKey","fieldType"],"values":[["on","boolean"],["s","string"]]}]}]}`,
			"map[env:map[n:integer t:float] power:map[on:boolean s:string]]", false},
		{"empty database", 200, "", `{"results":[{"statement_id":0}]}`, "map[]", false},
		{"missing database", 200, "", `{"results":[{"statement_id":0,"error":"database not found: x"}]}`, "map[]", false},
		{"statement error", 200, "", `{"results":[{"statement_id":0,"error":"boom"}]}`, "boom", true},
		{"unauthorized 1.x", 401, "authorization failed", `{"error":"authorization failed"}`, "status 401: authorization failed", true},
		{"unauthorized 2.x", 401, "", `{"code":"unauthorized","message":"unauthorized access"}`, "status 401: unauthorized access", true},
		{"proxy page", 502, "", `<html>bad gateway</html>`, "status 502: Bad Gateway", true},
		{"garbage", 200, "", `not json`, "invalid character", true},
		{"unexpected columns", 200, "", `{"results":[{"series":[{"name":"m","columns":["a"],"values":[["x"]]}]}]}`, "unexpected columns", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFieldKeys(tt.status, tt.header, []byte(tt.body))
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != tt.want {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}
