package simulator

import (
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

// series runs a generator for n readings dt seconds apart from t0.
func series(g generator, t0 time.Time, dt float64, n int) [][]field {
	out := make([][]field, n)
	for i := range out {
		out[i] = g.next(nil, t0.Add(time.Duration(float64(i)*dt*float64(time.Second))), dt)
	}
	return out
}

func value(fs []field, name string) field {
	for _, f := range fs {
		if f.name == name {
			return f
		}
	}
	return field{name: "missing:" + name}
}

func TestProfilesReproducible(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, p := range profiles {
		t.Run(p, func(t *testing.T) {
			a := series(newGenerator(p, 3, rand.New(rand.NewPCG(7, 3))), t0, 1, 500)
			b := series(newGenerator(p, 3, rand.New(rand.NewPCG(7, 3))), t0, 1, 500)
			if !reflect.DeepEqual(a, b) {
				t.Fatal("same seed, different signals")
			}
			c := series(newGenerator(p, 3, rand.New(rand.NewPCG(8, 3))), t0, 1, 500)
			if reflect.DeepEqual(a, c) {
				t.Fatal("different seeds, same signals")
			}
		})
	}
}

func TestMixedProfileAssignsByIndex(t *testing.T) {
	var got []string
	for i := range 8 {
		got = append(got, newGenerator(ProfileMixed, i, rand.New(rand.NewPCG(1, 1))).measurement())
	}
	want := []string{"environment", "vehicle", "power", "status", "environment", "vehicle", "power", "status"}
	if !slices.Equal(got, want) {
		t.Fatalf("mixed fleet measurements %v, want %v", got, want)
	}
}

func TestEnvironmentSignal(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for seed := range uint64(20) {
		g := newEnvironment(rand.New(rand.NewPCG(seed, 1)))
		s := series(g, t0, 60, 24*60) // a day, one reading a minute
		byHour := make([]float64, 24)
		for i, fs := range s {
			temp, hum := value(fs, "temperature").f, value(fs, "humidity").f
			if temp < -5 || temp > 45 || hum < 5 || hum > 99 {
				t.Fatalf("seed %d minute %d: temperature %.2f humidity %.1f out of range", seed, i, temp, hum)
			}
			if p := value(fs, "pressure").f; p < 950 || p > 1070 {
				t.Fatalf("pressure %.1f", p)
			}
			byHour[i/60] += temp / 60
		}
		// The daily cycle: afternoon warmer than the small hours.
		if byHour[15] <= byHour[4] {
			t.Fatalf("seed %d: 15:00 %.2f°C not warmer than 04:00 %.2f°C", seed, byHour[15], byHour[4])
		}
		// A random walk, not noise around a constant: successive readings are close.
		for i := 1; i < len(s); i++ {
			if d := math.Abs(value(s[i], "temperature").f - value(s[i-1], "temperature").f); d > 1.5 {
				t.Fatalf("seed %d: temperature jumped %.2f°C in a minute", seed, d)
			}
		}
	}
}

func TestVehicleSignal(t *testing.T) {
	for seed := range uint64(20) {
		g := newVehicle(rand.New(rand.NewPCG(seed, 1)))
		s := series(g, time.Unix(0, 0), 1, 3600)
		moved, stopped := false, false
		prevOdo := int64(-1)
		for i, fs := range s {
			lat, lon, speed, fuel := value(fs, "lat").f, value(fs, "lon").f, value(fs, "speed").f, value(fs, "fuel").f
			near := false
			for _, c := range cities {
				if math.Abs(lat-c[0]) < 0.2 && math.Abs(lon-c[1]) < 0.3 {
					near = true
				}
			}
			if !near || speed < 0 || speed > 130 || fuel < 0 || fuel > 100 {
				t.Fatalf("seed %d s %d: lat %.5f lon %.5f speed %.1f fuel %.1f", seed, i, lat, lon, speed, fuel)
			}
			odo := value(fs, "odometer")
			if odo.kind != kindInt || odo.i < prevOdo {
				t.Fatalf("odometer %+v after %d", odo, prevOdo)
			}
			prevOdo = odo.i
			moved = moved || speed > 20
			stopped = stopped || speed == 0
		}
		if !moved || !stopped {
			t.Fatalf("seed %d: in an hour the vehicle should both drive and stop (moved %v stopped %v)", seed, moved, stopped)
		}
	}
}

func TestPowerCountersMonotonic(t *testing.T) {
	g := newPower(rand.New(rand.NewPCG(1, 1)))
	s := series(g, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 10, 8640) // a day every 10 s
	first, last := value(s[0], "energy"), value(s[len(s)-1], "energy")
	for i := 1; i < len(s); i++ {
		e, pe := value(s[i], "energy"), value(s[i-1], "energy")
		if e.kind != kindInt || e.i < pe.i || value(s[i], "pulses").i < value(s[i-1], "pulses").i {
			t.Fatalf("counters went backwards at %d: %+v after %+v", i, e, pe)
		}
		if p := value(s[i], "power").f; p < 0 {
			t.Fatalf("negative power %f", p)
		}
	}
	// A day of a 150 W–5 kW load is between 1 and 200 kWh.
	if d := last.i - first.i; d < 1000 || d > 200000 {
		t.Fatalf("a day used %d Wh", d)
	}
}

func TestStatusSignal(t *testing.T) {
	g := newStatus(rand.New(rand.NewPCG(2, 1)))
	seen := map[string]bool{}
	doorChanges := 0
	prevDoor := false
	for i, fs := range series(g, time.Unix(0, 0), 5, 20000) {
		st := value(fs, "state")
		if st.kind != kindString || !slices.Contains(states, st.s) {
			t.Fatalf("state %+v", st)
		}
		seen[st.s] = true
		if d := value(fs, "door_open"); d.kind != kindBool {
			t.Fatalf("door_open %+v", d)
		} else if i > 0 && d.b != prevDoor {
			doorChanges++
			prevDoor = d.b
		} else {
			prevDoor = d.b
		}
		if e := value(fs, "error_code"); e.kind != kindInt || (st.s != "fault") != (e.i == 0) {
			t.Fatalf("state %s with error code %d", st.s, e.i)
		}
	}
	if len(seen) < 3 || doorChanges == 0 {
		t.Fatalf("states seen %v, door changes %d: the status should change over a day", seen, doorChanges)
	}
}
