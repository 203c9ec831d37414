package simulator

import (
	"math"
	"reflect"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func TestToCBOR(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want any
	}{
		{"frame", `{"seq":7,"ts":1763820000123456789,"metrics":{"a":-21.5,"b":{"value":3,"type":"int"},"c":true,"d":null,"e":"x \"y\" é"},"tags":{"sim_run":"r"}}`,
			map[any]any{"seq": uint64(7), "ts": uint64(1763820000123456789), "metrics": map[any]any{"a": -21.5, "b": map[any]any{"value": uint64(3), "type": "int"}, "c": true, "d": nil, "e": `x "y" é`}, "tags": map[any]any{"sim_run": "r"}}},
		{"batch", `{"seq":1,"readings":[{"metrics":{"n":-3}},{"metrics":{"n":1e3}}]}`,
			map[any]any{"seq": uint64(1), "readings": []any{map[any]any{"metrics": map[any]any{"n": int64(-3)}}, map[any]any{"metrics": map[any]any{"n": 1000.0}}}}},
		{"infinity", `{"metrics":{"x":1e400}}`, map[any]any{"metrics": map[any]any{"x": math.Inf(1)}}},
		{"truncated", `{"seq":12,"metrics":{"a":`, map[any]any{"seq": uint64(12), "truncated": `{"seq":12,"metrics":{"a":`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got any
			if err := cbor.Unmarshal(toCBOR([]byte(c.in)), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v\nwant %#v", got, c.want)
			}
		})
	}
	var nan any
	if err := cbor.Unmarshal(toCBOR([]byte(`{"metrics":{"x":NaN}}`)), &nan); err != nil {
		t.Fatal(err)
	}
	if x := nan.(map[any]any)["metrics"].(map[any]any)["x"].(float64); !math.IsNaN(x) {
		t.Fatalf("NaN became %v", x)
	}
}
