package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlpb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/appquota/appquota/internal/supervise"
)

// RatelimitOptions configures StartRatelimit. It reads its configuration
// either from an xDS server (XDSAddr) or from YAML files (FileConfigDir).
type RatelimitOptions struct {
	// Bin is envoyproxy/ratelimit's service binary; empty means
	// RatelimitBinary().
	Bin string
	// RedisAddr is the host:port of the redis-server that holds the counters
	// (Redis.Addr). Required.
	RedisAddr string

	// XDSAddr, when set, is the host:port of the xDS server ratelimit takes its
	// configuration from (CONFIG_TYPE=GRPC_XDS_SOTW). It does not serve until
	// that server has sent it a first configuration.
	XDSAddr string
	// NodeID is the xDS node ratelimit says it is, which the server's snapshot
	// must be set for. Required with XDSAddr.
	NodeID string
	// MaxMsgBytes is the largest xDS message ratelimit accepts; 0 leaves gRPC's
	// default of 4 MiB, too small for a configuration of every app.
	MaxMsgBytes int

	// FileConfigDir, used without XDSAddr, is a directory of ratelimit YAML
	// files (CONFIG_TYPE=FILE); ratelimit reloads them when they change there.
	FileConfigDir string

	// Domain, when set, is a domain the start waits for: it returns once this
	// domain's configuration is loaded, not merely once ratelimit serves.
	Domain string

	// GRPCPort, HTTPPort and DebugPort are where ratelimit listens, on
	// 127.0.0.1; 0 means a free port, found anew if the start loses it.
	GRPCPort, HTTPPort, DebugPort int
	// LogLevel is LOG_LEVEL; empty means "info", which logs each configuration
	// load (debug logs each request).
	LogLevel string
	// Env is added to ratelimit's environment after what StartRatelimit sets,
	// so it overrides any of it (DISABLE_STATS=false brings back the stats).
	Env []string
	// Log, when not nil, receives ratelimit's output.
	Log io.Writer
	// ReadyTimeout bounds each wait for it to serve; 0 means a minute.
	ReadyTimeout time.Duration
}

// Ratelimit is envoyproxy/ratelimit's service running against a Redis.
type Ratelimit struct {
	opts  RatelimitOptions
	ports struct{ grpc, http, debug int }
	proc  atomic.Pointer[supervise.Process]
}

// probeKey is the descriptor the readiness probe asks about. No configuration
// has a limit on it, so the probe counts nothing in Redis.
const probeKey = "appquota_engine_readiness_probe"

// StartRatelimit starts ratelimit and returns once it answers ShouldRateLimit
// over gRPC (and has loaded opts.Domain, when set).
func StartRatelimit(ctx context.Context, opts RatelimitOptions) (*Ratelimit, error) {
	if opts.RedisAddr == "" {
		return nil, errors.New("engine: RatelimitOptions.RedisAddr is required")
	}
	switch {
	case opts.XDSAddr != "" && opts.NodeID == "":
		return nil, errors.New("engine: RatelimitOptions.NodeID is required with XDSAddr")
	case opts.XDSAddr == "" && opts.FileConfigDir == "":
		return nil, errors.New("engine: RatelimitOptions needs XDSAddr or FileConfigDir")
	case opts.XDSAddr == "":
		dir, err := filepath.Abs(opts.FileConfigDir)
		if err != nil {
			return nil, fmt.Errorf("engine: resolve FileConfigDir: %w", err)
		}
		opts.FileConfigDir = dir
	}
	if opts.Bin == "" {
		bin, err := RatelimitBinary()
		if err != nil {
			return nil, err
		}
		opts.Bin = bin
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = readyTimeout
	}
	rl := &Ratelimit{opts: opts}
	p, _, err := supervise.StartUntilReady(ctx, func() (*supervise.Process, error) {
		if err := rl.choosePorts(); err != nil {
			return nil, err
		}
		return rl.start()
	}, rl.readyWhat(), opts.ReadyTimeout, rl.ready)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	rl.proc.Store(p)
	return rl, nil
}

// choosePorts picks a free port for each one the options leave at 0.
func (rl *Ratelimit) choosePorts() error {
	for _, p := range []struct {
		want int
		got  *int
	}{{rl.opts.GRPCPort, &rl.ports.grpc}, {rl.opts.HTTPPort, &rl.ports.http}, {rl.opts.DebugPort, &rl.ports.debug}} {
		*p.got = p.want
		if p.want == 0 {
			port, err := supervise.FreePort()
			if err != nil {
				return err
			}
			*p.got = port
		}
	}
	return nil
}

func (rl *Ratelimit) env() []string {
	o := rl.opts
	env := []string{
		"HOST=127.0.0.1", "PORT=" + strconv.Itoa(rl.ports.http),
		"GRPC_HOST=127.0.0.1", "GRPC_PORT=" + strconv.Itoa(rl.ports.grpc),
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT=" + strconv.Itoa(rl.ports.debug),
		"BACKEND_TYPE=redis", "REDIS_SOCKET_TYPE=tcp", "REDIS_TYPE=SINGLE", "REDIS_URL=" + o.RedisAddr,
		// Every decision goes to Redis, so that what a test or a benchmark sees is
		// Redis's count, not a local cache's memory of an earlier OVER_LIMIT.
		"LOCAL_CACHE_SIZE_IN_BYTES=0",
		// No statsd to send to; and the stdout sink that replaces it writes dozens
		// of lines every 10 s, which would push the log's useful end out of the
		// tail errors carry.
		"USE_STATSD=false", "DISABLE_STATS=true",
		"LOG_LEVEL=" + o.LogLevel,
	}
	if o.XDSAddr != "" {
		env = append(env,
			"CONFIG_TYPE=GRPC_XDS_SOTW",
			"CONFIG_GRPC_XDS_SERVER_URL="+o.XDSAddr,
			"CONFIG_GRPC_XDS_NODE_ID="+o.NodeID,
			// Its defaults (3 s between dials, 10 s to 60 s between streams) make a
			// test that restarts the xDS server wait a minute for nothing.
			"CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL=250ms",
			"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL=250ms",
			"XDS_CLIENT_BACKOFF_MAX_INTERVAL=2s",
		)
		if o.MaxMsgBytes > 0 {
			env = append(env, "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES="+strconv.Itoa(o.MaxMsgBytes))
		}
	} else {
		// The files are read from RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY;
		// without root watching, a change to any file there reloads them all
		// (with it, only an atomic swap of a symlinked root does).
		env = append(env,
			"CONFIG_TYPE=FILE",
			"RUNTIME_ROOT="+filepath.Dir(o.FileConfigDir),
			"RUNTIME_SUBDIRECTORY=",
			"RUNTIME_APPDIRECTORY="+filepath.Base(o.FileConfigDir),
			"RUNTIME_WATCH_ROOT=false",
			// Editors' and atomic writers' temporary files are not configuration.
			"RUNTIME_IGNOREDOTFILES=true",
		)
	}
	env = append(env, o.Env...)
	return append(os.Environ(), env...)
}

func (rl *Ratelimit) start() (*supervise.Process, error) {
	cmd := exec.Command(rl.opts.Bin)
	cmd.Env = rl.env()
	return supervise.Start(cmd, supervise.Options{Name: "ratelimit", Log: rl.opts.Log, StopGrace: stopGrace})
}

func (rl *Ratelimit) readyWhat() string {
	if rl.opts.Domain != "" {
		return fmt.Sprintf("ratelimit must answer ShouldRateLimit and have loaded domain %q", rl.opts.Domain)
	}
	return "ratelimit must answer ShouldRateLimit"
}

// ready asks ShouldRateLimit about a descriptor no configuration limits. An
// answer means ratelimit serves gRPC with a configuration loaded (it errors
// with "no rate limit configuration loaded" before that).
func (rl *Ratelimit) ready(ctx context.Context) (bool, error) {
	conn, err := grpc.NewClient(rl.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, fmt.Errorf("create a gRPC client: %w", err)
	}
	defer conn.Close()
	domain := rl.opts.Domain
	if domain == "" {
		domain = probeKey
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := rlpb.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, &rlpb.RateLimitRequest{
		Domain:      domain,
		Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: probeKey, Value: "1"}}}},
	}); err != nil {
		if ctx.Err() != nil {
			// No answer in time (a loaded machine): say so in a way the
			// wait can tell from ratelimit's own refusal.
			return false, fmt.Errorf("no answer within 2s: %w", ctx.Err())
		}
		return false, err
	}
	if rl.opts.Domain == "" {
		return true, nil
	}
	config, err := rl.LoadedConfig(ctx)
	if err != nil {
		return false, err
	}
	return hasDomain(config, rl.opts.Domain), nil
}

// hasDomain reports whether a /rlconfig dump has a limit in domain: its lines
// are "domain.key_value...: unit=... requests_per_unit=...".
func hasDomain(config, domain string) bool {
	for line := range strings.Lines(config) {
		if strings.HasPrefix(line, domain+".") {
			return true
		}
	}
	return false
}

// LoadedConfig is the configuration ratelimit has loaded, as its debug
// endpoint /rlconfig prints it: one line per limit, "domain.key_value: unit=
// MINUTE requests_per_unit=2, shadow_mode: false, ...".
func (rl *Ratelimit) LoadedConfig(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rl.DebugAddr()+"/rlconfig", nil)
	if err != nil {
		return "", fmt.Errorf("build the /rlconfig request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("get /rlconfig: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read /rlconfig: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("get /rlconfig: %s: %s", resp.Status, body)
	}
	return string(body), nil
}

// GRPCAddr is where ratelimit serves envoy.service.ratelimit.v3; it stays
// the same across Restart.
func (rl *Ratelimit) GRPCAddr() string { return hostPort(rl.ports.grpc) }

// HTTPAddr is where ratelimit serves /healthcheck and /json.
func (rl *Ratelimit) HTTPAddr() string { return hostPort(rl.ports.http) }

// DebugAddr is where ratelimit serves /rlconfig and its other debug pages.
func (rl *Ratelimit) DebugAddr() string { return hostPort(rl.ports.debug) }

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// PID is ratelimit's process ID.
func (rl *Ratelimit) PID() int { return rl.proc.Load().PID() }

// Log is the end of what ratelimit has printed since it was last
// (re)started.
func (rl *Ratelimit) Log() string { return rl.proc.Load().Log() }

// Exited reports whether ratelimit has exited (Stop, Kill, or on its own:
// it exits when a listener or Redis fails it).
func (rl *Ratelimit) Exited() bool { return rl.proc.Load().Exited() }

// Stop ends ratelimit with SIGTERM; it stops serving gracefully and exits.
func (rl *Ratelimit) Stop() error {
	if err := rl.proc.Load().Stop(); err != nil {
		return fmt.Errorf("engine: stop ratelimit: %w", err)
	}
	return nil
}

// Kill ends ratelimit with SIGKILL, as a crash or an OOM kill would.
func (rl *Ratelimit) Kill() error {
	if err := rl.proc.Load().Kill(); err != nil {
		return fmt.Errorf("engine: kill ratelimit: %w", err)
	}
	return nil
}

// Restart stops ratelimit if it runs and starts it again on the same ports
// with the same options, returning once it is ready as StartRatelimit does.
// It keeps no state of its own, so what it answers after is what Redis and
// its configuration source say.
func (rl *Ratelimit) Restart(ctx context.Context) error {
	// One that has exited (Kill, a crash) is simply started again.
	if old := rl.proc.Load(); !old.Exited() {
		if err := old.Stop(); err != nil {
			return fmt.Errorf("engine: stop ratelimit for a restart: %w", err)
		}
	}
	p, err := rl.start()
	if err != nil {
		return fmt.Errorf("engine: restart ratelimit: %w", err)
	}
	rl.proc.Store(p)
	if err := p.WaitUntil(ctx, rl.readyWhat()+" again", 50*time.Millisecond, rl.opts.ReadyTimeout, rl.ready); err != nil {
		_ = p.Stop()
		return fmt.Errorf("engine: %w", err)
	}
	return nil
}
