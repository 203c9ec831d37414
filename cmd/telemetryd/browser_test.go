package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// The dashboard in a real headless Chromium against the real service and a
// real InfluxDB: the device appears, its chart follows live readings, the
// page recovers and back-fills after the service restarts, and it works
// over SSE when WebSockets are blocked.

// chromiumPath finds Debian's chromium (make tools installs it). Without it
// the test is skipped, or fails when CI=true.
func chromiumPath(t *testing.T) string {
	t.Helper()
	return testsupport.Binary(t, "TELEMETRY_CHROMIUM", "run make tools, or set TELEMETRY_CHROMIUM",
		"chromium", "chromium-browser", "google-chrome")
}

// artifactDir is where screenshots go: $TELEMETRY_ARTIFACTS, else a
// temporary directory of the test.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TELEMETRY_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// browser starts one headless Chromium with a fresh profile for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// tab is one page of the browser, with its JavaScript errors and CSP
// violations collected.
type tab struct {
	t    *testing.T
	ctx  context.Context
	mu   sync.Mutex
	errs []string
}

func newTab(t *testing.T, browserCtx context.Context) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg = d.Exception.Description
			}
			tb.mu.Lock()
			tb.errs = append(tb.errs, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
			tb.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range ev.Args {
					if a.Value != nil {
						parts = append(parts, string(a.Value))
					} else {
						parts = append(parts, a.Description)
					}
				}
				tb.mu.Lock()
				tb.errs = append(tb.errs, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
				tb.mu.Unlock()
			}
		}
	}); err != nil {
		t.Fatalf("listen: %v", err)
	}
	// Record CSP violations (scripts added this way are exempt from the CSP).
	_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));`,
	})
	if err != nil {
		t.Fatalf("add script: %v", err)
	}
	return tb
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v%s", err, tb.report())
	}
}

// waitFor polls the JavaScript predicate until it is true.
func (tb *tab) waitFor(what, predicate string, timeout time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		state, _ := evalJS[string](tb, `JSON.stringify([telemetryDashboard.connection(), telemetryDashboard.selection(), telemetryDashboard.series()])`)
		tb.t.Fatalf("waiting for %s (%s): %v\npage: %s%s", what, predicate, err, state, tb.report())
	}
}

func evalJS[T any](tb *tab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

func mustEval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := evalJS[T](tb, expr)
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v%s", expr, err, tb.report())
	}
	return v
}

func (tb *tab) report() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.errs) == 0 {
		return ""
	}
	return "\nbrowser messages:\n  " + strings.Join(tb.errs, "\n  ")
}

// noErrors fails the test on JavaScript exceptions, console errors or
// warnings, and CSP violations. Expected ones (a stopped server makes the
// browser log failed connections) are filtered by allow.
func (tb *tab) noErrors(allow ...string) {
	tb.t.Helper()
	csp := mustEval[[]string](tb, `window.__csp || []`)
	if len(csp) > 0 {
		tb.t.Fatalf("CSP violations: %v", csp)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
next:
	for _, e := range tb.errs {
		for _, a := range allow {
			if strings.Contains(e, a) {
				continue next
			}
		}
		tb.t.Fatalf("browser reported: %s\nall messages:\n  %s", e, strings.Join(tb.errs, "\n  "))
	}
}

func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(artifactDir(tb.t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot: %s", p)
	return p
}

// browserDevice sends readings as one WebSocket device and waits for each ack.
type browserDevice struct {
	c   *wsClient
	seq int
}

func newBrowserDevice(t *testing.T, svc *service, token string) *browserDevice {
	t.Helper()
	return &browserDevice{c: mustDialWS(t, svc.ws("/v1/ingest"), bearer(token))}
}

type envReading struct {
	ts     time.Time
	temp   float64
	door   bool
	status string
}

// send sends readings in one frame and waits for its ack.
func (d *browserDevice) send(t *testing.T, rs ...envReading) {
	t.Helper()
	d.seq++
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ts":%d,"measurement":"environment","metrics":{"temperature":{"value":%g,"unit":"Cel"},"door_open":%t,"status":%q},"tags":{"site":"plant-3"}}`,
			r.ts.UnixMilli(), r.temp, r.door, r.status)
	}
	d.c.send(t, fmt.Sprintf(`{"seq":%d,"readings":[%s]}`, d.seq, b.String()))
	var ack ackOrError
	d.c.nextJSON(t, &ack)
	if ack.Ack == nil || *ack.Ack != uint64(d.seq) || ack.Error != nil {
		t.Fatalf("want ack %d, got %+v", d.seq, ack)
	}
}

// noWebSocketProxy is a reverse proxy to addr that refuses WebSocket
// upgrades, as some corporate proxies do, and streams everything else.
func noWebSocketProxy(t *testing.T, addr string) string {
	t.Helper()
	target, err := url.Parse("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // Server-Sent Events must not be buffered
	var refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			refused.Add(1)
			http.Error(w, "WebSockets are not allowed through this proxy", http.StatusForbidden)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		if refused.Load() == 0 && !t.Failed() {
			t.Error("the page never tried a WebSocket through the proxy")
		}
	})
	return srv.URL
}

// writeInflux stores line protocol directly, as if another instance had
// ingested it while this one was down.
func writeInflux(t *testing.T, influx *influxtest.Server, lines string) {
	t.Helper()
	resp, err := http.Post(influx.URL()+"/write?db="+testDB+"&precision=ns", "text/plain", strings.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("influx write: %s", resp.Status)
	}
}

const tempPoints = `telemetryDashboard.points("dev-1", "environment", "temperature")`

// wantTemps waits until the temperature series holds exactly want (ms → value).
func (tb *tab) wantTemps(what string, want map[int64]float64) {
	tb.t.Helper()
	var b strings.Builder
	b.WriteString(`(() => { const p = ` + tempPoints + `; const want = {`)
	n := 0
	for ts, v := range want {
		if n > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"%d": %g`, ts, v)
		n++
	}
	fmt.Fprintf(&b, `}; return p.length === %d && p.every(([t, v]) => want[t] === v); })()`, len(want))
	tb.waitFor(what, b.String(), 30*time.Second)
}

func TestBrowserDashboard(t *testing.T) {
	bctx := browser(t) // skips early when there is no chromium
	influx := influxtest.Start(t)
	tokens := tokensFile(t, "dev-1", "tok-dev-1", "dev-2", "tok-dev-2")
	svc := startService(t, influx, nil, tokens)
	dev := newBrowserDevice(t, svc, "tok-dev-1")

	// Readings from before the page opens: the chart must show them (back-fill).
	want := map[int64]float64{}
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	var history []envReading
	for i := range 40 {
		r := envReading{ts: base.Add(time.Duration(i) * 15 * time.Second), temp: math.Round((21+2*math.Sin(float64(i)/5))*100) / 100,
			door: i%12 < 3, status: []string{"ok", "heating", "ok", "idle"}[i/10]}
		history = append(history, r)
		want[r.ts.UnixMilli()] = r.temp
	}
	dev.send(t, history...)
	// Another device, at another site, for the list.
	other := newBrowserDevice(t, svc, "tok-dev-2")
	other.c.send(t, `{"seq":1,"measurement":"power","metrics":{"energy":{"value":12.5,"unit":"Wh"}},"tags":{"site":"plant-4"}}`)
	var ack ackOrError
	if m := other.c.nextJSON(t, &ack); ack.Ack == nil || ack.Error != nil {
		t.Fatalf("dev-2: %s", m)
	}

	tb := newTab(t, bctx)
	// The token travels in the URL once; the page moves it to sessionStorage.
	tb.do(chromedp.Navigate(svc.url("/?token=" + url.QueryEscape(testAdminToken))))
	tb.waitFor("the device in the list", `document.querySelector('#device-list button.device[data-id="dev-1"]') !== null`, 20*time.Second)
	if loc := mustEval[string](tb, `location.href`); strings.Contains(loc, "token") {
		t.Fatalf("the token stayed in the URL: %s", loc)
	}
	if got := mustEval[string](tb, `document.querySelector('#device-list button.device[data-id="dev-1"]').dataset.online`); got != "true" {
		t.Fatalf("dev-1 online = %s, want true", got)
	}

	// The landing view is the fleet's latest values, from the snapshot of
	// every device, over a compressed socket (issue 20).
	tb.waitFor("the fleet's latest values", `document.querySelector('#detail').dataset.view === "fleet" && [...document.querySelectorAll('#latest tbody tr')].some((tr) => tr.textContent.includes("energy") && tr.textContent.includes("12.5")) && [...document.querySelectorAll('#latest tbody tr')].some((tr) => tr.textContent.includes("temperature"))`, 20*time.Second)
	tb.waitFor("the compressed live state", `telemetryDashboard.connection().state === "live" && telemetryDashboard.connection().compressed && document.querySelector('#conn-text').textContent.includes("compressed")`, 20*time.Second)
	// A value storage refuses (another writer fixed probe.mode as a string
	// first; the type guard cannot know) is marked refused once storage
	// says so, after it was shown live.
	now := time.Now()
	writeInflux(t, influx, fmt.Sprintf("probe,device_id=other mode=\"auto\" %d\n", now.Add(-time.Second).UnixNano()))
	other.c.send(t, fmt.Sprintf(`{"seq":2,"ts":%d,"measurement":"probe","metrics":{"mode":3},"tags":{"site":"plant-4"}}`, now.UnixMilli()))
	tb.waitFor("the refused marker", `[...document.querySelectorAll('#latest tbody tr')].some((tr) => tr.textContent.includes("mode") && tr.dataset.refused === "true" && tr.textContent.includes("(refused)"))`, 20*time.Second)
	tb.do(chromedp.Click(chromedp.CSS(`#device-list button.device[data-id="dev-1"]`)))
	tb.waitFor("the live state over WebSocket", `telemetryDashboard.connection().state === "live" && telemetryDashboard.connection().transport === "ws"`, 20*time.Second)
	tb.wantTemps("back-filled history", want)

	// Live: new readings reach the chart, the table and the state timeline.
	for i := range 3 {
		r := envReading{ts: time.Now().Add(time.Duration(i-3) * time.Second).Truncate(time.Millisecond), temp: 22.5 + float64(i), door: true, status: "heating"}
		dev.send(t, r)
		want[r.ts.UnixMilli()] = r.temp
	}
	tb.wantTemps("live points", want)
	tb.waitFor("the chart's latest value", `document.querySelector('figure.chart[data-field="temperature"]').dataset.last === "24.5"`, 10*time.Second)
	tb.waitFor("the unit in the chart caption", `document.querySelector('figure.chart[data-field="temperature"] figcaption').textContent.includes("(Cel)")`, 10*time.Second)
	tb.waitFor("the state timeline", `document.querySelector('figure.chart[data-field="status"]')?.dataset.kind === "state"`, 10*time.Second)
	tb.waitFor("the latest-values table", `[...document.querySelectorAll('#latest tbody tr')].some((tr) => tr.textContent.includes("temperature") && tr.textContent.includes("24.5") && tr.textContent.includes("Cel"))`, 10*time.Second)
	// The unconfirmed marker: live values were shown unconfirmed, then
	// confirmed by the persisted watermark.
	tb.waitFor("the live values confirmed", `telemetryDashboard.stats().confirmed > 0 && [...document.querySelectorAll('#latest tbody tr')].some((tr) => tr.textContent.includes("24.5") && tr.dataset.unconfirmed === "false" && !tr.textContent.includes("(unconfirmed)"))`, 20*time.Second)

	// A dropped connection resumes: the readings sent meanwhile arrive,
	// replayed by the server, without a back-fill of the page's own.
	before := mustEval[map[string]float64](tb, `telemetryDashboard.stats()`)
	mustEval[bool](tb, `(telemetryDashboard.dropConnection(), true)`)
	var missed []envReading
	for i := range 2 {
		r := envReading{ts: time.Now().Add(time.Duration(i-2) * 100 * time.Millisecond).Truncate(time.Millisecond), temp: 25.5 + float64(i), door: false, status: "ok"}
		missed = append(missed, r)
		want[r.ts.UnixMilli()] = r.temp
	}
	dev.send(t, missed...)
	tb.waitFor("the resume", fmt.Sprintf(`telemetryDashboard.stats().resumes > %v && telemetryDashboard.connection().state === "live"`, before["resumes"]), 20*time.Second)
	tb.wantTemps("the missed points after the resume", want)
	after := mustEval[map[string]float64](tb, `telemetryDashboard.stats()`)
	if after["backfills"] != before["backfills"] || after["replayed"] < before["replayed"]+2 || after["resets"] != before["resets"] {
		t.Fatalf("stats before %v, after %v: want the 2 missed readings replayed, no back-fill, no reset", before, after)
	}
	shot := tb.screenshot("dashboard.png")
	if os.Getenv("TELEMETRY_UPDATE_SCREENSHOT") != "" {
		b, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "..", "docs", "screenshot.png"), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	// The service restarts on the same port. While it is down the page shows
	// it is reconnecting; points stored meanwhile appear after the resume,
	// once each.
	addr := svc.addr
	svc.stop(t)
	tb.waitFor("the reconnecting state", `telemetryDashboard.connection().state === "reconnecting"`, 20*time.Second)
	var lines strings.Builder
	for i := range 3 {
		ts := time.Now().Add(time.Duration(i-3) * time.Second).Truncate(time.Millisecond)
		fmt.Fprintf(&lines, "environment,device_id=dev-1,site=plant-3 temperature=%g %d\n", 30+float64(i), ts.UnixNano())
		want[ts.UnixMilli()] = 30 + float64(i)
	}
	writeInflux(t, influx, lines.String())
	svc2 := startService(t, influx, nil, tokens, "-http-addr", addr)
	tb.waitFor("live again after the restart", `telemetryDashboard.connection().state === "live"`, 30*time.Second)
	tb.wantTemps("the gap back-filled without duplicates", want)
	// The new server cannot resume the old one's positions: it said so
	// (reset), and the page took the snapshot and back-filled.
	if st := mustEval[map[string]float64](tb, `telemetryDashboard.stats()`); st["resets"] < 1 || st["backfills"] <= after["backfills"] {
		t.Fatalf("stats after the restart %v: want a reset and a back-fill", st)
	}
	dev2 := newBrowserDevice(t, svc2, "tok-dev-1")
	ts := time.Now().Truncate(time.Millisecond)
	dev2.send(t, envReading{ts: ts, temp: 40, status: "ok"})
	want[ts.UnixMilli()] = 40
	tb.wantTemps("live after the restart", want)
	tb.noErrors("ERR_CONNECTION_REFUSED", "WebSocket connection to", "Failed to load resource", "EventSource")

	// A label selector: the list filters by label, and "Watch all" charts
	// every matching device, here one that has not reported since the
	// restart (its series come from InfluxDB).
	tb.do(chromedp.SendKeys(chromedp.ID("filter-label"), "site=plant-4"))
	tb.waitFor("the list filtered by label", `[...document.querySelectorAll('#device-list button.device')].map((b) => b.dataset.id).join() === "dev-2"`, 10*time.Second)
	tb.do(chromedp.Click(chromedp.ID("watch-selector")))
	tb.waitFor("the selected devices' chart", `document.querySelector('figure.chart[data-field="energy"]')?.dataset.last === "12.5" && !document.querySelector('figure.chart[data-field="temperature"]')`, 20*time.Second)

	// WebSockets blocked on the way (a proxy that refuses upgrades): the
	// page falls back to SSE by itself.
	proxy := noWebSocketProxy(t, svc2.addr)
	sse := newTab(t, bctx)
	sse.do(chromedp.Navigate(proxy + "/?token=" + url.QueryEscape(testAdminToken) + "#device=dev-1"))
	sse.waitFor("the fallback state over SSE", `telemetryDashboard.connection().state === "fallback" && telemetryDashboard.connection().transport === "sse"`, 30*time.Second)
	sse.wantTemps("back-fill over the fallback", want)
	ts = time.Now().Truncate(time.Millisecond)
	dev2.send(t, envReading{ts: ts, temp: 41.25, door: true, status: "ok"})
	want[ts.UnixMilli()] = 41.25
	sse.wantTemps("live over SSE", want)
	sse.waitFor("the chart's latest value over SSE", `document.querySelector('figure.chart[data-field="temperature"]').dataset.last === "41.25"`, 10*time.Second)
	sse.screenshot("dashboard-sse.png")
	sse.noErrors("WebSocket connection to", "Failed to load resource", "falling back")

	// A phone-width viewport: nothing overflows sideways.
	sse.do(chromedp.EmulateViewport(390, 844))
	sse.waitFor("no horizontal overflow at phone width", `document.documentElement.scrollWidth <= window.innerWidth`, 10*time.Second)
	sse.screenshot("dashboard-phone.png")
}
