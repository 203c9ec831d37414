package storage

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLockDirTwoOpens: a second hold on a held directory fails with the
// holder's pid; once released the directory can be taken again.
func TestLockDirTwoOpens(t *testing.T) {
	dir := t.TempDir()
	l, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir)
	want := fmt.Sprintf("data dir %s is in use by pid %d", dir, os.Getpid())
	if !errors.Is(err, ErrDirInUse) || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second LockDir: %v; want ErrDirInUse, %q", err, want)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := LockDir(dir)
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	l2.Unlock()
}

// TestLockDirTwoProcesses: a child process holds the directory; this one
// cannot take it and is told the child's pid; once the child is killed
// (kill -9: nothing cleans up) the directory is free again.
func TestLockDirTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockDirHelper$")
	cmd.Env = append(os.Environ(), "TELEMETRY_LOCK_HELPER_DIR="+dir)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper: %q %v", line, err)
	}
	_, err = LockDir(dir)
	want := fmt.Sprintf("data dir %s is in use by pid %d", dir, cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("LockDir while the helper holds it: %v; want %q", err, want)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	stdin.Close()
	l, err := LockDir(dir)
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	l.Unlock()
}

// TestLockDirHelper is the child of TestLockDirTwoProcesses: it holds the
// directory until its stdin closes or it is killed.
func TestLockDirHelper(t *testing.T) {
	dir := os.Getenv("TELEMETRY_LOCK_HELPER_DIR")
	if dir == "" {
		t.Skip("run by TestLockDirTwoProcesses")
	}
	if _, err := LockDir(dir); err != nil {
		t.Fatal(err)
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
}
