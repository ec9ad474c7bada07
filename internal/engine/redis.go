package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/appquota/appquota/internal/supervise"
)

// RedisOptions configures StartRedis.
type RedisOptions struct {
	// Bin is the redis-server binary; empty means RedisBinary().
	Bin string
	// Dir is redis-server's working directory. It is told to write nothing
	// there (no snapshots, no append-only file), so that a restart starts
	// empty; empty means a temporary directory that Stop removes.
	Dir string
	// Log, when not nil, receives redis-server's output.
	Log io.Writer
	// ReadyTimeout bounds each wait for it to answer PING; 0 means a minute.
	ReadyTimeout time.Duration
}

// Redis is a redis-server of its own on a loopback port, holding nothing on
// disk.
type Redis struct {
	opts    RedisOptions
	port    int
	tempDir bool
	proc    atomic.Pointer[supervise.Process]
}

// StartRedis starts redis-server on a free loopback port and returns once it
// answers PING.
func StartRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	if opts.Bin == "" {
		bin, err := RedisBinary()
		if err != nil {
			return nil, err
		}
		opts.Bin = bin
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = readyTimeout
	}
	r := &Redis{opts: opts}
	if r.opts.Dir == "" {
		dir, err := os.MkdirTemp("", "appquota-redis-")
		if err != nil {
			return nil, fmt.Errorf("engine: create redis-server's directory: %w", err)
		}
		r.opts.Dir, r.tempDir = dir, true
	}
	// The port is found free but not held, so another process may take it
	// before redis-server binds it: then it exits and is started on another.
	p, _, err := supervise.StartUntilReady(ctx, func() (*supervise.Process, error) {
		port, err := supervise.FreePort()
		if err != nil {
			return nil, err
		}
		r.port = port
		return r.start()
	}, "redis-server must answer PING", r.opts.ReadyTimeout, r.ping)
	if err != nil {
		r.removeDir()
		return nil, fmt.Errorf("engine: %w", err)
	}
	r.proc.Store(p)
	return r, nil
}

func (r *Redis) start() (*supervise.Process, error) {
	if err := os.MkdirAll(r.opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create redis-server's directory: %w", err)
	}
	cmd := exec.Command(r.opts.Bin,
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.opts.Dir,
		"--daemonize", "no",
	)
	return supervise.Start(cmd, supervise.Options{Name: "redis-server", Log: r.opts.Log, StopGrace: stopGrace})
}

func (r *Redis) ping(ctx context.Context) (bool, error) {
	pong, err := r.Do(ctx, "PING")
	return pong == "PONG", err
}

// Addr is the host:port redis-server listens on; it stays the same across
// Restart.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// PID is redis-server's process ID.
func (r *Redis) PID() int { return r.proc.Load().PID() }

// Log is the end of what redis-server has printed since it was last
// (re)started.
func (r *Redis) Log() string { return r.proc.Load().Log() }

// Stop ends redis-server and removes the temporary directory StartRedis made.
func (r *Redis) Stop() error {
	err := r.proc.Load().Stop()
	r.removeDir()
	if err != nil {
		return fmt.Errorf("engine: stop redis-server: %w", err)
	}
	return nil
}

// Kill ends redis-server with SIGKILL, as a crash would.
func (r *Redis) Kill() error {
	if err := r.proc.Load().Kill(); err != nil {
		return fmt.Errorf("engine: kill redis-server: %w", err)
	}
	return nil
}

// Restart stops redis-server if it runs and starts it again on the same port,
// empty: every counter it held is gone, as after a failover to a fresh
// replica. It returns once the new one answers PING.
func (r *Redis) Restart(ctx context.Context) error {
	// One that has exited (Kill, a crash) is simply started again.
	if old := r.proc.Load(); !old.Exited() {
		if err := old.Stop(); err != nil {
			return fmt.Errorf("engine: stop redis-server for a restart: %w", err)
		}
	}
	p, err := r.start()
	if err != nil {
		return fmt.Errorf("engine: restart redis-server: %w", err)
	}
	r.proc.Store(p)
	if err := p.WaitUntil(ctx, "redis-server must answer PING again on "+r.Addr(), 50*time.Millisecond, r.opts.ReadyTimeout, r.ping); err != nil {
		_ = p.Stop()
		return fmt.Errorf("engine: %w", err)
	}
	return nil
}

// FlushAll deletes every key: every rate-limit counter starts again at zero.
func (r *Redis) FlushAll(ctx context.Context) error {
	if _, err := r.Do(ctx, "FLUSHALL"); err != nil {
		return fmt.Errorf("engine: flush redis: %w", err)
	}
	return nil
}

func (r *Redis) removeDir() {
	if r.tempDir {
		_ = os.RemoveAll(r.opts.Dir)
	}
}

// Do sends one command on a connection of its own and returns the reply: a
// status ("OK", "PONG"), an integer in decimal, or a bulk string ("" for
// nil). A Redis error reply is returned as an error; array replies are not
// supported. It is meant for setup and assertions (FLUSHALL, DBSIZE, GET),
// not for load.
func (r *Redis) Do(ctx context.Context, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", r.Addr())
	if err != nil {
		return "", fmt.Errorf("dial redis: %w", err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return "", fmt.Errorf("set a deadline on the redis connection: %w", err)
	}
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return "", fmt.Errorf("send %s to redis: %w", args[0], err)
	}
	reply, err := readReply(bufio.NewReader(conn))
	if err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	return reply, nil
}

// readReply reads one RESP2 reply that is not an array.
func readReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read the reply: %w", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch kind, rest := line[0], line[1:]; kind {
	case '+', ':':
		return rest, nil
	case '-':
		return "", errors.New(rest)
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil {
			return "", fmt.Errorf("parse the bulk length %q: %w", rest, err)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", fmt.Errorf("read the bulk reply: %w", err)
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("unsupported reply %q", line)
	}
}
