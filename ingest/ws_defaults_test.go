package ingest

import (
	"reflect"
	"testing"
)

// TestDefaultWSConfigIsTheZeroValue: DefaultWSConfig, which cmd's flags
// default to, is what the zero WSConfig means.
func TestDefaultWSConfigIsTheZeroValue(t *testing.T) {
	if got, want := (WSConfig{}).withDefaults(), DefaultWSConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("zero WSConfig means %+v, DefaultWSConfig is %+v", got, want)
	}
}
