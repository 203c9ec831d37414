package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/telemetryd/telemetryd/devices"
	"github.com/telemetryd/telemetryd/devices/adminclient"
)

// The operator commands `telemetryd devices …` and `telemetryd viewers …`
// talk to the admin API of a running service, so that an operator never
// needs curl; `telemetryd mosquitto-auth` renders the broker's files from
// the registry database directly.

// cliFlags are the flags every devices/viewers command takes.
type cliFlags struct {
	fs     *flag.FlagSet
	url    string
	token  string
	ca     string
	asJSON bool
}

func newCLIFlags(name, usage string, lookupEnv func(string) (string, bool), stderr io.Writer) *cliFlags {
	c := &cliFlags{fs: flag.NewFlagSet("telemetryd "+name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: telemetryd %s\n\nflags:\n", usage)
		c.fs.PrintDefaults()
	}
	e := &envFlags{fs: c.fs, lookup: lookupEnv}
	e.str(&c.url, "url", "TELEMETRY_URL", "http://127.0.0.1:8080", "base URL of the running telemetryd")
	e.str(&c.token, "admin-token", "TELEMETRY_ADMIN_TOKEN", "", "operator token")
	e.str(&c.ca, "ca", "TELEMETRY_URL_CA", "", "PEM CA bundle trusted for an https:// -url")
	c.fs.BoolVar(&c.asJSON, "json", false, "print the API's JSON instead of a table")
	return c
}

// parse parses flags placed before, between or after positional arguments
// (the flag package alone stops at the first positional one).
func (c *cliFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, err
		}
		if c.fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, c.fs.Arg(0))
		args = c.fs.Args()[1:]
	}
}

func (c *cliFlags) client() (*adminclient.Client, error) {
	if c.token == "" {
		return nil, errors.New("no admin token: set TELEMETRY_ADMIN_TOKEN or -admin-token")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.ca != "" {
		t, err := caTLS(c.ca)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = t
	}
	api, err := adminclient.New(c.url, c.token, &http.Client{Timeout: adminclient.DefaultTimeout, Transport: tr})
	if err != nil {
		return nil, fmt.Errorf("-url %q: want http(s)://host:port", c.url)
	}
	return api, nil
}

// labelFlag collects repeated -label k=v flags.
type labelFlag struct {
	m   map[string]string
	set bool
}

func (l *labelFlag) String() string { return "" }

func (l *labelFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	if l.m == nil {
		l.m = map[string]string{}
	}
	l.m[k] = v
	l.set = true
	return nil
}

const devicesUsage = `devices <command> [flags]

commands:
  create -name N [-kind device|gateway] [-label k=v]... [-gateway ID]
  list   [-label k=v]... [-kind K] [-gateway ID] [-limit N] [-all]
  get    ID
  update ID [-name N] [-label k=v]... [-clear-labels] [-gateway ID|""]
  rotate ID [-grace 10m]     new token; the old one works for the grace
  revoke ID                  ends access now and closes open sockets
  delete ID`

// devicesCommand is `telemetryd devices …`.
func devicesCommand(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: telemetryd "+devicesUsage)
		return flag.ErrHelp
	}
	verb := args[0]
	f := newCLIFlags("devices "+verb, devicesUsage, lookupEnv, stderr)
	var name, kind, gateway, grace string
	var labels labelFlag
	var limit int
	var all, clearLabels bool
	switch verb {
	case "create":
		f.fs.StringVar(&name, "name", "", "human name (required)")
		f.fs.StringVar(&kind, "kind", "device", "device or gateway")
		f.fs.Var(&labels, "label", "label key=value, stored as a tag on every reading (repeatable)")
		f.fs.StringVar(&gateway, "gateway", "", "id of the gateway that may report for this device")
	case "list":
		f.fs.Var(&labels, "label", "only devices with label key=value (repeatable: all must match)")
		f.fs.StringVar(&kind, "kind", "", "only devices of this kind")
		f.fs.StringVar(&gateway, "gateway", "", "only devices assigned to this gateway")
		f.fs.IntVar(&limit, "limit", 100, "page size (1 to 1000)")
		f.fs.BoolVar(&all, "all", false, "follow next_cursor to the end")
	case "update":
		f.fs.StringVar(&name, "name", "", "new name")
		f.fs.Var(&labels, "label", "label key=value; the labels given replace all labels (repeatable)")
		f.fs.BoolVar(&clearLabels, "clear-labels", false, "remove every label")
		f.fs.StringVar(&gateway, "gateway", noGateway, `assign to this gateway ("" unassigns)`)
	case "rotate":
		f.fs.StringVar(&grace, "grace", "", "how long the old token keeps working, e.g. 10m or 0s (default: the server's -token-rotation-grace)")
	case "get", "revoke", "delete":
	default:
		fmt.Fprintf(stderr, "telemetryd devices: unknown command %q\nusage: telemetryd %s\n", verb, devicesUsage)
		return flag.ErrHelp
	}
	api, id, err := f.target(args[1:], verb)
	if err != nil {
		return err
	}
	switch verb {
	case "create":
		out, err := api.CreateDevice(ctx, adminclient.NewDevice{Name: name, Kind: kind, Labels: labels.m, Gateway: gateway})
		if err != nil {
			return err
		}
		return printDeviceToken(stdout, stderr, f.asJSON, out)
	case "list":
		filter := adminclient.DeviceFilter{Labels: labels.m, Kind: kind, Gateway: gateway, Limit: limit}
		var list adminclient.DevicePage
		for {
			page, err := api.ListDevices(ctx, filter)
			if err != nil {
				return err
			}
			list.Devices = append(list.Devices, page.Devices...)
			list.NextCursor = page.NextCursor
			if !all || page.NextCursor == "" {
				break
			}
			filter.Cursor = page.NextCursor
		}
		if list.Devices == nil {
			list.Devices = []adminclient.Device{} // JSON [], not null
		}
		if f.asJSON {
			return json.NewEncoder(stdout).Encode(list)
		}
		if err := printDevices(stdout, list.Devices); err != nil {
			return err
		}
		if list.NextCursor != "" {
			fmt.Fprintln(stderr, "more devices follow: use -all, or -json for next_cursor")
		}
		return nil
	case "get", "update", "revoke":
		var d adminclient.Device
		var err error
		switch verb {
		case "get":
			d, err = api.Device(ctx, id)
		case "revoke":
			d, err = api.RevokeDevice(ctx, id)
		case "update":
			var ch adminclient.DeviceChange
			if name != "" {
				ch.Name = &name
			}
			if labels.set {
				ch.Labels = labels.m
			} else if clearLabels {
				ch.Labels = map[string]string{}
			}
			if gateway != noGateway {
				ch.Gateway = &gateway
			}
			d, err = api.UpdateDevice(ctx, id, ch)
		}
		if err != nil {
			return err
		}
		if f.asJSON {
			return json.NewEncoder(stdout).Encode(map[string]adminclient.Device{"device": d})
		}
		return printDevices(stdout, []adminclient.Device{d})
	case "rotate":
		g := time.Duration(-1) // the server's -token-rotation-grace
		if grace != "" {
			if g, err = time.ParseDuration(grace); err != nil {
				return fmt.Errorf("-grace: %w", err)
			}
		}
		out, err := api.RotateDevice(ctx, id, g)
		if err != nil {
			return err
		}
		return printDeviceToken(stdout, stderr, f.asJSON, out)
	default: // delete
		if err := api.DeleteDevice(ctx, id); err != nil {
			return err
		}
		if !f.asJSON {
			fmt.Fprintf(stdout, "deleted %s\n", id)
		}
		return nil
	}
}

func printDeviceToken(stdout, stderr io.Writer, asJSON bool, out adminclient.DeviceToken) error {
	if asJSON {
		return json.NewEncoder(stdout).Encode(out)
	}
	if err := printDevices(stdout, []adminclient.Device{out.Device}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ntoken: %s\n", out.Token)
	fmt.Fprintln(stderr, "Store the token now: it is not kept and cannot be shown again. MQTT: username = device id, password = token.")
	return nil
}

func printDevices(w io.Writer, ds []adminclient.Device) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tNAME\tGATEWAY\tLABELS\tLAST SEEN\tREVOKED")
	for _, d := range ds {
		seen := "never"
		if d.LastSeenAt != nil {
			seen = d.LastSeenAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\n", d.ID, d.Kind, d.Name, dash(d.Gateway), formatLabels(d.Labels), seen, d.Revoked)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatLabels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

const viewersUsage = `viewers <command> [flags]

commands:
  create -name N [-scope k=v]...   token for /v1/live, restricted to readings with these tags
  list
  get    ID
  revoke ID                        ends access now and closes open dashboards
  delete ID`

// viewersCommand is `telemetryd viewers …`.
func viewersCommand(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: telemetryd "+viewersUsage)
		return flag.ErrHelp
	}
	verb := args[0]
	f := newCLIFlags("viewers "+verb, viewersUsage, lookupEnv, stderr)
	var name string
	var scope labelFlag
	switch verb {
	case "create":
		f.fs.StringVar(&name, "name", "", "human name (required)")
		f.fs.Var(&scope, "scope", "restrict to readings tagged key=value (repeatable: all must match; none: unrestricted)")
	case "list", "get", "revoke", "delete":
	default:
		fmt.Fprintf(stderr, "telemetryd viewers: unknown command %q\nusage: telemetryd %s\n", verb, viewersUsage)
		return flag.ErrHelp
	}
	api, id, err := f.target(args[1:], verb)
	if err != nil {
		return err
	}
	var one adminclient.Viewer
	switch verb {
	case "create":
		out, err := api.CreateViewer(ctx, name, scope.m)
		if err != nil {
			return err
		}
		if f.asJSON {
			return json.NewEncoder(stdout).Encode(out)
		}
		if err := printViewers(stdout, []adminclient.Viewer{out.Viewer}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\ntoken: %s\n", out.Token)
		fmt.Fprintln(stderr, "Store the token now: it is not kept and cannot be shown again.")
		return nil
	case "list":
		list, err := api.Viewers(ctx)
		if err != nil {
			return err
		}
		if f.asJSON {
			return json.NewEncoder(stdout).Encode(map[string][]adminclient.Viewer{"viewers": list})
		}
		return printViewers(stdout, list)
	case "get":
		one, err = api.Viewer(ctx, id)
	case "revoke":
		one, err = api.RevokeViewer(ctx, id)
	default: // delete
		if err := api.DeleteViewer(ctx, id); err != nil {
			return err
		}
		if !f.asJSON {
			fmt.Fprintf(stdout, "deleted %s\n", id)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if f.asJSON {
		return json.NewEncoder(stdout).Encode(map[string]adminclient.Viewer{"viewer": one})
	}
	return printViewers(stdout, []adminclient.Viewer{one})
}

func printViewers(w io.Writer, vs []adminclient.Viewer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tREVOKED")
	for _, v := range vs {
		scope := formatLabels(v.Scope)
		if scope == "-" {
			scope = "(all)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", v.ID, v.Name, scope, v.CreatedAt.Format(time.RFC3339), v.Revoked)
	}
	return tw.Flush()
}

// mosquittoAuthCommand is `telemetryd mosquitto-auth -password-file F
// -acl-file F [service flags]`: it writes the broker's password and ACL
// files from the registry database under -data-dir (the service may be
// running). Send Mosquitto SIGHUP afterwards to reload them.
func mosquittoAuthCommand(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	own := flag.NewFlagSet("telemetryd mosquitto-auth", flag.ContinueOnError)
	own.SetOutput(stderr)
	var pwFile, aclFile string
	own.StringVar(&pwFile, "password-file", "", "Mosquitto password_file to write (required)")
	own.StringVar(&aclFile, "acl-file", "", "Mosquitto acl_file to write (required)")
	own.Usage = func() {
		fmt.Fprintln(stderr, `usage: telemetryd mosquitto-auth -password-file F -acl-file F [-data-dir D] [-mqtt-topic T] [-mqtt-username U]

Writes the Mosquitto password and ACL files from the device registry in
-data-dir: every active device may publish to its own topic only (a gateway
also to its devices' topics), and only -mqtt-username (whose password is
TELEMETRY_MQTT_PASSWORD) may subscribe. Reload the broker with kill -HUP.
The other service flags (telemetryd -h) are accepted too.

flags:`)
		own.PrintDefaults()
	}
	// Split our two flags from the service's.
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "password-file" && name != "acl-file" && name != "h" && name != "help") {
			rest = append(rest, a)
			continue
		}
		if name == "h" || name == "help" {
			own.Usage()
			return flag.ErrHelp
		}
		if !hasVal {
			if i+1 >= len(args) {
				return fmt.Errorf("flag -%s needs a value", name)
			}
			i++
			val = args[i]
		}
		if err := own.Set(name, val); err != nil {
			return err
		}
	}
	if pwFile == "" || aclFile == "" {
		own.Usage()
		return flag.ErrHelp
	}
	cfg, err := parseConfig(rest, lookupEnv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, where, err := openRegistryStore(ctx, cfg, log) // registrystore.go
	if err != nil {
		return err
	}
	reg, err := devices.Open(ctx, store, devices.Config{}, log)
	if err != nil {
		store.Close()
		return err
	}
	defer reg.Close()
	if err := reg.WriteMosquittoFiles(pwFile, aclFile, cfg.MQTTTopic, devices.MosquittoAccount{Username: cfg.MQTTUsername, Password: cfg.MQTTPassword}); err != nil {
		return err
	}
	st := reg.Stats()
	fmt.Fprintf(stdout, "wrote %s and %s from %s (%d registered devices); reload Mosquitto with kill -HUP <pid>\n", pwFile, aclFile, where, st.Devices)
	return nil
}

// target parses a subcommand's flags and positional arguments and returns
// the API client and the named id: exactly one argument for every verb but
// create and list, which take none ("" then).
func (f *cliFlags) target(args []string, verb string) (api *adminclient.Client, id string, err error) {
	pos, err := f.parse(args)
	if err != nil {
		return nil, "", err
	}
	wantID := verb != "create" && verb != "list"
	if wantID && len(pos) != 1 || !wantID && len(pos) != 0 {
		f.fs.Usage()
		return nil, "", flag.ErrHelp
	}
	if api, err = f.client(); err != nil {
		return nil, "", err
	}
	if wantID {
		id = pos[0]
	}
	return api, id, nil
}

// noGateway is -gateway's default for update: not given, as opposed to ""
// (unassign).
const noGateway = "\x00"
