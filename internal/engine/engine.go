// Package engine runs the programs that enforce appquota's quotas, the real
// envoyproxy/ratelimit service and the real redis-server that holds its
// counters, as child processes of tests, the demo and the benchmarks, so that
// what they exercise is the engine a cluster runs, not a stand-in.
//
// The binaries come from RatelimitBinary and RedisBinary: $RATELIMIT_BIN and
// $REDIS_SERVER when set (make test sets both), else hack/setup-ratelimit.sh
// and hack/setup-redis.sh, which build or install them once per machine.
package engine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// stopGrace is how long Stop gives either program after SIGTERM: both exit
// within milliseconds when healthy, so waiting longer only hides a hang.
const stopGrace = 10 * time.Second

// readyTimeout is how long a start waits for a program to serve unless told
// otherwise: both serve within a second, but a machine busy building the
// control plane can be much slower.
const readyTimeout = time.Minute

// RatelimitBinary returns the path of envoyproxy/ratelimit's service binary:
// $RATELIMIT_BIN when set, else what hack/setup-ratelimit.sh prints (it
// builds the binary the first time, which takes minutes, and answers from
// its cache after that).
func RatelimitBinary() (string, error) { return binary("RATELIMIT_BIN", "setup-ratelimit.sh") }

// RedisBinary returns the path of redis-server: $REDIS_SERVER when set, else
// what hack/setup-redis.sh prints (it installs Debian's package when
// redis-server is not on PATH).
func RedisBinary() (string, error) { return binary("REDIS_SERVER", "setup-redis.sh") }

func binary(env, script string) (string, error) {
	if bin := os.Getenv(env); bin != "" {
		if err := executable(bin); err != nil {
			return "", fmt.Errorf("engine: $%s: %w", env, err)
		}
		return bin, nil
	}
	path, err := findScript(script)
	if err != nil {
		return "", fmt.Errorf("engine: $%s is not set, and %w", env, err)
	}
	cmd := exec.Command(path)
	// Its progress (a build of minutes, an apt-get install) is worth seeing.
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("engine: run %s: %w", path, err)
	}
	bin := strings.TrimSpace(string(out))
	if err := executable(bin); err != nil {
		return "", fmt.Errorf("engine: %s printed %q: %w", path, bin, err)
	}
	return bin, nil
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat binary: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// findScript walks up from the working directory (a package's, under go
// test) to the one whose hack directory holds script.
func findScript(script string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find hack/%s: %w", script, err)
	}
	for {
		path := filepath.Join(dir, "hack", script)
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no hack/" + script + " above the working directory")
		}
		dir = parent
	}
}
