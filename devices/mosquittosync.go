package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// MosquittoSyncConfig names the broker files a MosquittoSync keeps in step
// with the registry.
type MosquittoSyncConfig struct {
	PasswordFile string // Mosquitto password_file (required)
	ACLFile      string // Mosquitto acl_file (required)
	// PIDFile, when set, holds the broker's pid: it gets SIGHUP (reload the
	// password and ACL files) after every rewrite.
	PIDFile string
	Topic   string           // the device topic, '+' standing for the id
	Service MosquittoAccount // the service's own consumer
	// Leader, on a registry shared by several instances, lets only the
	// instance that leads write the files (nil: Solo, this one always).
	Leader Leader
}

// MosquittoSync rewrites the broker's password and ACL files whenever a
// device changes, so that MQTT credentials follow the registry without a
// restart. Changes are coalesced: a rewrite reads the registry as it is
// then, so one pending signal covers every change before it.
type MosquittoSync struct {
	reg  *Registry
	cfg  MosquittoSyncConfig
	log  *slog.Logger
	wake chan struct{} // capacity 1: a pending rewrite; further signals are dropped
}

// NewMosquittoSync writes the files once — so that a path that cannot be
// written fails at start, not at the first change — and subscribes to the
// registry's device events. Run performs the rewrites.
func NewMosquittoSync(reg *Registry, cfg MosquittoSyncConfig, log *slog.Logger) (*MosquittoSync, error) {
	if cfg.PasswordFile == "" || cfg.ACLFile == "" {
		return nil, errors.New("devices: mosquitto sync needs both a password file and an ACL file")
	}
	if cfg.Leader == nil {
		cfg.Leader = Solo{}
	}
	s := &MosquittoSync{reg: reg, cfg: cfg, log: log, wake: make(chan struct{}, 1)}
	if cfg.Leader.Leading() {
		if err := s.write(); err != nil {
			return nil, err
		}
	}
	reg.Subscribe(func(e Event) {
		if e.Device == "" {
			return // viewers have no broker account
		}
		select {
		case s.wake <- struct{}{}:
		default: // a rewrite is already pending; it will see this change
		}
	})
	return s, nil
}

// Run rewrites the files after changes until ctx is done — on a shared
// registry only while this instance leads, and once on taking the lead. A
// failed rewrite is logged; the broker keeps the previous files.
func (s *MosquittoSync) Run(ctx context.Context) error {
	elected := make(chan struct{})
	go func() {
		defer close(elected)
		_ = s.cfg.Leader.Run(ctx)
	}()
	defer func() { <-elected }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.Leader.Changed():
			if !s.cfg.Leader.Leading() {
				continue
			}
			// The previous leader may have stopped before writing the
			// latest change.
			if err := s.write(); err != nil {
				s.log.Error("writing the Mosquitto files on taking the lead failed", "error", err)
			}
		case <-s.wake:
			if !s.cfg.Leader.Leading() {
				continue // another instance writes the files
			}
			if err := s.write(); err != nil {
				s.log.Error("rewriting the Mosquitto files failed; the broker keeps the previous ones", "error", err)
			}
		}
	}
}

func (s *MosquittoSync) write() error {
	if err := s.reg.WriteMosquittoFiles(s.cfg.PasswordFile, s.cfg.ACLFile, s.cfg.Topic, s.cfg.Service); err != nil {
		return err
	}
	if s.cfg.PIDFile != "" {
		return signalPIDFile(s.cfg.PIDFile)
	}
	return nil
}

// signalPIDFile sends SIGHUP (Mosquitto: reload password and ACL files) to
// the process whose id the file holds.
func signalPIDFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("devices: mosquitto pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("devices: mosquitto pid file %s: no valid pid", path)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("devices: reload mosquitto (pid %d): %w", pid, err)
	}
	return nil
}
