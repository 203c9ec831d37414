package simulator

import (
	"math"
	"math/rand/v2"
	"time"
)

// fieldKind is how a metric is encoded on the wire.
type fieldKind uint8

const (
	kindFloat  fieldKind = iota // bare JSON number (stored as float)
	kindInt                     // {"value":N,"type":"int"}
	kindBool                    // true/false
	kindString                  // JSON string
)

// field is one metric of a generated reading.
type field struct {
	name string
	kind fieldKind
	f    float64
	i    int64
	b    bool
	s    string
	unit string
	prec int // decimals of a float
}

func floatField(name string, v float64, prec int, unit string) field {
	return field{name: name, kind: kindFloat, f: v, prec: prec, unit: unit}
}

func intField(name string, v int64, unit string) field {
	return field{name: name, kind: kindInt, i: v, unit: unit}
}

func boolField(name string, v bool) field { return field{name: name, kind: kindBool, b: v} }

func stringField(name, v string) field { return field{name: name, kind: kindString, s: v} }

// generator produces one device's signal. next appends the metrics of the
// reading taken at ts, dt seconds (the nominal interval) after the
// previous one. Values depend only on the generator's seeded source, the
// sequence of dt and — for daily cycles — the time of day of ts, so a seed
// reproduces a fleet's signals.
type generator interface {
	measurement() string
	next(dst []field, ts time.Time, dt float64) []field
}

// newGenerator returns the generator of profile for the device with the
// given fleet index; its randomness comes from rng alone.
func newGenerator(profile string, index int, rng *rand.Rand) generator {
	if profile == ProfileMixed {
		profile = profiles[index%len(profiles)]
	}
	switch profile {
	case ProfileVehicle:
		return newVehicle(rng)
	case ProfilePower:
		return newPower(rng)
	case ProfileStatus:
		return newStatus(rng)
	default:
		return newEnvironment(rng)
	}
}

// dayPhase is the time of day of ts as a fraction of 24 hours (UTC).
func dayPhase(ts time.Time) float64 {
	h, m, s := ts.UTC().Clock()
	return (float64(h)*3600 + float64(m)*60 + float64(s)) / 86400
}

// ou advances an Ornstein–Uhlenbeck process (a random walk pulled back to
// 0 with rate theta per second, volatility sigma per √s).
func ou(x, theta, sigma, dt float64, rng *rand.Rand) float64 {
	return x - theta*x*dt + sigma*math.Sqrt(dt)*rng.NormFloat64()
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

// environment: an indoor/outdoor climate sensor. Temperature follows a
// daily cycle (coolest around 04:00, warmest around 16:00 UTC) plus a
// mean-reverting random walk; humidity moves against temperature; pressure
// wanders around 1013 hPa; the battery drains slowly and is replaced.
type environment struct {
	rng                    *rand.Rand
	base, amp              float64 // °C
	walk, hBase, hWalk     float64
	pressure, battery, rss float64
}

func newEnvironment(rng *rand.Rand) *environment {
	return &environment{
		rng:      rng,
		base:     16 + 8*rng.Float64(),
		amp:      1 + 4*rng.Float64(),
		hBase:    35 + 25*rng.Float64(),
		pressure: 1013 + 8*rng.NormFloat64(),
		battery:  60 + 40*rng.Float64(),
		rss:      -55 - 30*rng.Float64(),
	}
}

func (e *environment) measurement() string { return ProfileEnvironment }

func (e *environment) next(dst []field, ts time.Time, dt float64) []field {
	e.walk = ou(e.walk, 0.002, 0.02, dt, e.rng)
	e.hWalk = ou(e.hWalk, 0.002, 0.06, dt, e.rng)
	e.pressure = 1013 + ou(e.pressure-1013, 0.0005, 0.02, dt, e.rng)
	e.battery -= 0.0005 * dt
	if e.battery < 5 {
		e.battery = 100 // replaced
	}
	cycle := -math.Cos(2 * math.Pi * (dayPhase(ts) - 4.0/24))
	temp := e.base + e.amp*cycle + e.walk + 0.03*e.rng.NormFloat64()
	hum := clamp(e.hBase-1.8*(temp-e.base)+e.hWalk, 5, 99)
	return append(dst,
		floatField("temperature", temp, 2, "Cel"),
		floatField("humidity", hum, 1, "%RH"),
		floatField("pressure", e.pressure, 1, "hPa"),
		floatField("battery", e.battery, 2, "%"),
		floatField("rssi", e.rss+2*e.rng.NormFloat64(), 0, "dBm"),
	)
}

// vehicle: a fleet vehicle driving a closed route of waypoints around a
// city: it accelerates towards a per-leg cruising speed, slows for each
// waypoint, stops there for a while, burns fuel with distance and refuels.
type vehicle struct {
	rng       *rand.Rand
	route     [][2]float64 // lat, lon
	leg       int          // heading from route[leg] to route[leg+1]
	pos       [2]float64
	speed     float64 // km/h
	cruise    float64
	stopLeft  float64 // seconds left standing at a waypoint
	fuel      float64 // %
	tank      float64 // litres
	odometer  float64 // m
	heading   float64
	consumpt  float64 // litres/100 km
	engineOn  bool
	idleTotal float64
}

var cities = [][2]float64{
	{52.5200, 13.4050},  // Berlin
	{48.8566, 2.3522},   // Paris
	{51.5072, -0.1276},  // London
	{40.4168, -3.7038},  // Madrid
	{41.9028, 12.4964},  // Rome
	{52.3676, 4.9041},   // Amsterdam
	{40.7128, -74.0060}, // New York
	{35.6762, 139.6503}, // Tokyo
}

func newVehicle(rng *rand.Rand) *vehicle {
	c := cities[rng.IntN(len(cities))]
	n := 5 + rng.IntN(6)
	radius := 0.02 + 0.06*rng.Float64() // degrees, ≈2–9 km
	route := make([][2]float64, n)
	for i := range route {
		a := 2 * math.Pi * (float64(i) + 0.3*rng.Float64()) / float64(n)
		r := radius * (0.5 + 0.5*rng.Float64())
		route[i] = [2]float64{c[0] + r*math.Sin(a), c[1] + r*math.Cos(a)/math.Cos(c[0]*math.Pi/180)}
	}
	v := &vehicle{
		rng: rng, route: route, pos: route[0],
		tank: 50 + 30*rng.Float64(), consumpt: 6 + 6*rng.Float64(),
		fuel: 30 + 70*rng.Float64(), odometer: 1e6 * (10 + 200*rng.Float64()),
	}
	v.cruise = v.newCruise()
	return v
}

func (v *vehicle) newCruise() float64 { return 30 + 60*v.rng.Float64() }

func (v *vehicle) measurement() string { return ProfileVehicle }

// metersBetween is the equirectangular distance, fine at city scale.
func metersBetween(a, b [2]float64) float64 {
	const r = 6371e3
	lat := (a[0] + b[0]) / 2 * math.Pi / 180
	dx := (b[1] - a[1]) * math.Pi / 180 * math.Cos(lat)
	dy := (b[0] - a[0]) * math.Pi / 180
	return r * math.Hypot(dx, dy)
}

func (v *vehicle) next(dst []field, _ time.Time, dt float64) []field {
	target := v.route[(v.leg+1)%len(v.route)]
	left := metersBetween(v.pos, target)
	switch {
	case v.stopLeft > 0:
		v.stopLeft -= dt
		v.speed = 0
		v.engineOn = v.stopLeft > 20 || v.rng.Float64() < 0.5
		v.idleTotal += dt
	default:
		v.engineOn = true
		want := v.cruise
		if left < 150 { // slow down for the waypoint
			want = math.Max(10, v.cruise*left/150)
		}
		accel := 8.0 * dt // km/h per second
		v.speed += clamp(want-v.speed, -2*accel, accel) + 0.5*v.rng.NormFloat64()
		v.speed = clamp(v.speed, 0, 130)
		step := v.speed / 3.6 * dt
		if step >= left { // waypoint reached: stop, then the next leg
			v.pos = target
			v.leg = (v.leg + 1) % len(v.route)
			v.stopLeft = 5 + 55*v.rng.Float64()
			v.cruise = v.newCruise()
			step = left
		} else if left > 0 {
			f := step / left
			v.heading = math.Mod(math.Atan2((target[1]-v.pos[1])*math.Cos(v.pos[0]*math.Pi/180), target[0]-v.pos[0])*180/math.Pi+360, 360)
			v.pos[0] += (target[0] - v.pos[0]) * f
			v.pos[1] += (target[1] - v.pos[1]) * f
		}
		v.odometer += step
		v.fuel -= step / 1e5 * v.consumpt / v.tank * 100
		if v.fuel < 8 {
			v.fuel = 100 // refuelled
		}
	}
	return append(dst,
		floatField("lat", v.pos[0], 6, "lat"),
		floatField("lon", v.pos[1], 6, "lon"),
		floatField("speed", v.speed, 1, "km/h"),
		floatField("heading", v.heading, 0, "deg"),
		floatField("fuel", v.fuel, 2, "%"),
		intField("odometer", int64(v.odometer), "m"),
		boolField("engine_on", v.engineOn),
	)
}

// power: an electricity meter. The load follows a daily profile (higher
// in the day) with noise; energy and pulse counters only ever increase and
// are integer fields, as real meter registers are.
type power struct {
	rng              *rand.Rand
	base, peak       float64 // W
	energy, carry    float64 // Wh, fraction not yet counted
	pulses           int64
	voltage, pf, imp float64 // V, power factor, impulses per Wh
}

func newPower(rng *rand.Rand) *power {
	base := 150 + 1500*rng.Float64()
	return &power{
		rng: rng, base: base, peak: base * (1.5 + 2*rng.Float64()),
		energy:  math.Floor(1e5 + 1e7*rng.Float64()),
		voltage: 230, pf: 0.85 + 0.14*rng.Float64(), imp: 1,
	}
}

func (p *power) measurement() string { return ProfilePower }

func (p *power) next(dst []field, ts time.Time, dt float64) []field {
	day := math.Max(0, math.Sin(2*math.Pi*(dayPhase(ts)-6.0/24))) // daylight hump
	load := math.Max(0, p.base+(p.peak-p.base)*day+0.05*p.base*p.rng.NormFloat64())
	p.voltage = 230 + ou(p.voltage-230, 0.01, 0.3, dt, p.rng)
	p.carry += load * dt / 3600
	whole := math.Floor(p.carry)
	p.carry -= whole
	p.energy += whole
	p.pulses += int64(whole * p.imp)
	return append(dst,
		floatField("power", load, 1, "W"),
		floatField("voltage", p.voltage, 1, "V"),
		floatField("current", load/p.voltage/p.pf, 3, "A"),
		floatField("power_factor", p.pf, 3, ""),
		intField("energy", int64(p.energy), "Wh"),
		intField("pulses", p.pulses, ""),
	)
}

// status: a machine's state flags. The state is a Markov chain (mostly
// running or idle, rarely maintenance or fault); a fault sets an error code;
// the door opens now and then; uptime grows and resets on a rare reboot.
type status struct {
	rng      *rand.Rand
	state    int
	door     bool
	uptime   float64
	firmware string
	errCode  int64
}

var states = []string{"running", "idle", "maintenance", "fault"}

// stateChange[i][j] is the probability per minute of moving from state i to j.
var stateChange = [4][4]float64{
	{0, 0.2, 0.01, 0.02},
	{0.5, 0, 0.02, 0.005},
	{0.3, 0.1, 0, 0},
	{0.1, 0.4, 0.2, 0},
}

var firmwares = []string{"1.4.2", "1.5.0", "2.0.1", "2.1.0-rc1"}

func newStatus(rng *rand.Rand) *status {
	return &status{
		rng: rng, state: rng.IntN(2), uptime: float64(rng.IntN(30 * 86400)),
		firmware: firmwares[rng.IntN(len(firmwares))],
	}
}

func (s *status) measurement() string { return ProfileStatus }

func (s *status) next(dst []field, _ time.Time, dt float64) []field {
	u := s.rng.Float64()
	for j, p := range stateChange[s.state] {
		if u -= p * dt / 60; u < 0 {
			s.state = j
			if states[j] == "fault" {
				s.errCode = int64(100 + s.rng.IntN(20))
			}
			break
		}
	}
	if states[s.state] != "fault" {
		s.errCode = 0
	}
	if s.rng.Float64() < 0.02*dt { // the door moves about every 50 s
		s.door = !s.door
	}
	s.uptime += dt
	if s.rng.Float64() < 0.0005*dt {
		s.uptime = 0 // rebooted
	}
	return append(dst,
		boolField("online", true),
		boolField("door_open", s.door),
		stringField("state", states[s.state]),
		stringField("firmware", s.firmware),
		intField("error_code", s.errCode, ""),
		intField("uptime", int64(s.uptime), "s"),
	)
}
