package huleedu

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking (healthCheckConfig)
)

// DefaultTimeout is the deadline of a unary call whose context has none.
const DefaultTimeout = 10 * time.Second

// Option configures a client.
type Option func(*options)

type options struct {
	tls         *tls.Config
	insecure    bool
	apiKey      string
	timeout     time.Duration
	retry       RetryPolicy
	dialOptions []grpc.DialOption
}

// RetryPolicy is how idempotent calls are retried on UNAVAILABLE: up to MaxAttempts attempts in
// all, waiting a random time up to InitialBackoff, then growing by Multiplier up to MaxBackoff
// (gRPC's own retry machinery, configured per method). MaxAttempts 1 turns retries off.
type RetryPolicy struct {
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
}

// DefaultRetryPolicy: 5 attempts, 100 ms doubling up to 2 s.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, Multiplier: 2,
}

// WithInsecure connects in plaintext (local development; never across a network you do not own).
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithTLS connects with TLS using cfg (custom roots, a client certificate for mTLS, ...). Without
// WithTLS or WithInsecure, the SDK uses TLS with the system roots.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithAPIKey sends key on every call as "authorization: Bearer <key>" metadata. Over a plaintext
// connection (WithInsecure) the key travels unencrypted.
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithTimeout sets the deadline of unary calls whose context has none (DefaultTimeout otherwise).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithDialOptions adds gRPC dial options (a custom dialer, keepalive, ...), applied last.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

func newOptions(opts []Option) options {
	o := options{timeout: DefaultTimeout, retry: DefaultRetryPolicy}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// dial opens a connection to target with o's security, credentials, retries and interceptors;
// idempotent lists the full method names ("/pkg.Service/Method") that may be retried.
func dial(target string, o options, idempotent []string) (*grpc.ClientConn, error) {
	var creds credentials.TransportCredentials
	switch {
	case o.insecure && o.tls != nil:
		return nil, fmt.Errorf("huleedu: WithInsecure and WithTLS are mutually exclusive")
	case o.insecure:
		creds = insecure.NewCredentials()
	case o.tls != nil:
		creds = credentials.NewTLS(o.tls)
	default:
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	config, err := serviceConfig(o.retry, idempotent)
	if err != nil {
		return nil, err
	}
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(config),
		grpc.WithChainUnaryInterceptor(unaryInterceptor(o.timeout)),
		grpc.WithChainStreamInterceptor(streamInterceptor),
	}
	if o.apiKey != "" {
		dialOptions = append(dialOptions, grpc.WithPerRPCCredentials(bearer{o.apiKey, !o.insecure}))
	}
	return grpc.NewClient(target, append(dialOptions, o.dialOptions...)...)
}

// serviceConfig is the gRPC service config retrying UNAVAILABLE for the idempotent methods, with
// client-side health checking: the channel watches each server's grpc.health.v1 service
// "accepting" (SERVING from start-up until the server drains) and sends nothing to one that is
// not, so a server that drains receives no new call before it stops. Health checking needs round_robin, which
// balances over every address the target resolves to.
func serviceConfig(p RetryPolicy, idempotent []string) (string, error) {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	names := make([]name, 0, len(idempotent))
	for _, full := range idempotent {
		service, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
		if !ok {
			return "", fmt.Errorf("huleedu: bad method name %q", full)
		}
		names = append(names, name{service, method})
	}
	config := map[string]any{
		"loadBalancingConfig": []any{map[string]any{"round_robin": map[string]any{}}},
		"healthCheckConfig":   map[string]any{"serviceName": "accepting"},
	}
	if p.MaxAttempts < 2 {
		out, err := json.Marshal(config)
		return string(out), err
	}
	seconds := func(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }
	config["methodConfig"] = []any{map[string]any{
		"name": names,
		"retryPolicy": map[string]any{
			"maxAttempts":          p.MaxAttempts,
			"initialBackoff":       seconds(p.InitialBackoff),
			"maxBackoff":           seconds(p.MaxBackoff),
			"backoffMultiplier":    p.Multiplier,
			"retryableStatusCodes": []string{"UNAVAILABLE"},
		},
	}}
	out, err := json.Marshal(config)
	return string(out), err
}

// bearer is the API key as per-RPC credentials.
type bearer struct {
	key        string
	requireTLS bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.requireTLS }
