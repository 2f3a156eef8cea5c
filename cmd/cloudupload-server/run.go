package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/backend/httpapi"
	"github.com/cloudupload/cloudupload/backend/imagesource"
	"github.com/cloudupload/cloudupload/internal/connlimit"
)

// shutdownGrace bounds how long running requests (a streamed log, a PUT)
// may take to finish at shutdown before they are cut.
const shutdownGrace = 10 * time.Second

// Bounds on a request's headers: what a connection may hold before its
// handler runs (the request line with its query string counts too), and how
// long a client may take to send them.
const (
	maxHeaderBytes    = 32 << 10
	readHeaderTimeout = 10 * time.Second
)

// Main is the daemon: ParseFlags, Run, then Close. Tests run it on port 0
// with a temporary state directory.
type Main struct {
	Config Config
	Logger *slog.Logger
	Stdout io.Writer // where --help goes; default os.Stdout
	Stderr io.Writer // where logs go; default os.Stderr

	manager *backend.Manager
	api     *httpapi.Server
	server  *http.Server
	ln      net.Listener
	served  chan error
	clients *pushClients // nil without --clients
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main {
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr}
	m.Config.flagSet().Parse(nil)
	m.Logger = slog.New(slog.NewTextHandler(m.Stderr, nil))
	return m
}

// ParseFlags reads the command line and the config file it names.
func (m *Main) ParseFlags(args []string) error {
	if err := m.Config.parse(args, m.Stdout); err != nil {
		return err
	}
	if err := m.Config.check(); err != nil {
		return err
	}
	var level slog.Level
	level.UnmarshalText([]byte(m.Config.LogLevel))
	m.Logger = slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: level}))
	return nil
}

// Run opens the job manager and starts serving; it returns once the server
// listens. Serving errors end up in Close.
func (m *Main) Run(ctx context.Context) (err error) {
	start := time.Now()
	c := &m.Config
	log := m.Logger
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err := os.MkdirAll(c.StateDir, 0o750); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	stateDir, err := filepath.Abs(c.StateDir)
	if err != nil {
		return err
	}
	uploader, shimPath := c.Uploader, c.Shim
	if uploader == "" || shimPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the uploader beside this program: %w", err)
		}
		if uploader == "" {
			uploader = filepath.Join(filepath.Dir(exe), "clouduploader")
		}
		if p := filepath.Join(filepath.Dir(exe), "cloudupload-shim"); shimPath == "" && isExecutable(p) {
			shimPath = p
		}
	}
	ours, probed, err := backend.ProbeUploader(ctx, uploader)
	if err != nil {
		return fmt.Errorf("uploader: %w", err)
	}
	var fetcher backend.Fetcher
	source := "none (only jobs whose image is sent with PUT)"
	switch {
	case c.BuildRoot != "":
		b, err := imagesource.NewBuildRoot(c.BuildRoot)
		if err != nil {
			return err
		}
		fetcher, source = b, "build root "+c.BuildRoot
	case c.RepServer != "":
		r, err := imagesource.NewRepServer(c.RepServer)
		if err != nil {
			return err
		}
		r.Logger = log
		fetcher, source = r, "repository server "+c.RepServer
	}
	pub, priv, generated, err := loadKeys(stateDir, c.PubKey, c.PrivKey)
	if err != nil {
		return err
	}
	if generated {
		log.Info("generated a key pair for secrets in target data", "dir", filepath.Join(stateDir, "keys"), "bits", KeyBits)
	}
	var token string
	if c.TokenFile != "" {
		if token, err = readToken(c.TokenFile, log); err != nil {
			return err
		}
	}
	if c.ClientsFile != "" {
		if m.clients, err = loadClients(c.ClientsFile, log); err != nil {
			return err
		}
		log.Info("pushing clients", "file", c.ClientsFile, "clients", len(m.clients.Current().Entries), "private_reads", c.PrivateReads)
	}
	var env []string
	if len(c.Mirrors) > 0 {
		env = append(env, "CLOUDUPLOAD_MIRRORS="+strings.Join(c.Mirrors, ","))
	}
	if priv != "" {
		env = append(env, "CLOUDUPLOAD_PRIVKEY="+priv)
	}

	memLimit := "none"
	if os.Getenv("GOMEMLIMIT") != "" {
		memLimit = "GOMEMLIMIT=" + os.Getenv("GOMEMLIMIT")
	} else if c.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(c.MemoryLimit) << 20)
		memLimit = fmt.Sprintf("%d MiB", c.MemoryLimit)
	}
	log.Info("starting", "state_dir", stateDir, "image_source", source, "uploader", uploader, "shim", shimText(shimPath),
		"max_uploads", c.MaxUploads, "max_uploads_per_user", c.MaxUploadsPerUser, "kill_grace", c.KillGrace,
		"retention", retentionText(c.Retention), "receive_idle_timeout", c.ReceiveIdle, "min_free_space", int64(c.MinFreeSpace),
		"mirrors", c.Mirrors.String(), "tls", c.TLSCert != "",
		"token", token != "", "max_connections", c.MaxConnections, "memory_limit", memLimit)
	if ours {
		log.Info("the uploader speaks this server's protocol: target data is checked at create", "uploader", uploader, "protocol", probed)
	} else {
		log.Info("the uploader has OBS's argv only: jobs are created without checking their target data, the uploader checks it when it runs",
			"uploader", uploader, "protocol_probe", probed)
	}
	store, err := openStore(ctx, c, stateDir, priv, log)
	if err != nil {
		return err
	}
	if store != nil {
		n := store.Node()
		log.Info("a node of a cluster: jobs are kept in the database", "node", n.Name, "advertise_url", n.URL,
			"lease", c.Lease, "node_uploads", c.NodeUploads, "rerun_after_node_loss", ours)
	}
	metrics := httpapi.NewMetrics()
	m.manager, err = backend.Open(ctx, backend.Config{
		Store: store, Lease: c.Lease, NodeUploads: c.NodeUploads, Rerun: ours,
		StateDir: stateDir, Uploader: uploader, Shim: shimPath, MaxUploads: c.MaxUploads,
		MaxUploadsPerUser: c.MaxUploadsPerUser, KillGrace: c.KillGrace, Retention: c.Retention,
		ReceiveIdleTimeout: c.ReceiveIdle, MinFreeSpace: minFreeSpace(c.MinFreeSpace),
		UploaderEnv: env, Fetcher: fetcher, Logger: log, NoValidate: !ours, Observer: metrics,
	})
	if err != nil {
		if store != nil {
			store.Close()
		}
		return err
	}

	metrics.SetStats(m.manager.Stats)
	hc := httpapi.Config{Manager: m.manager, Token: token, PublicKey: pub, Logger: log, PrivateReads: c.PrivateReads, Metrics: metrics}
	if m.clients != nil {
		hc.Clients = m.clients
	}
	api, err := httpapi.New(hc)
	if err != nil {
		return err
	}
	m.api = api
	m.server = &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if m.ln, err = net.Listen("tcp", c.Listen); err != nil {
		return err
	}
	m.ln = connlimit.Listen(m.ln, c.MaxConnections)
	scheme := "http"
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		m.server.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"}} // HTTP/1.1 only: error status lines carry OBS's summary
		m.ln = tls.NewListener(m.ln, m.server.TLSConfig)
		scheme = "https"
	}
	m.served = make(chan error, 1)
	go func() { m.served <- m.server.Serve(m.ln) }()
	log.Info("listening", "url", scheme+"://"+m.ln.Addr().String(), "startup", time.Since(start).Round(time.Millisecond),
		"dashboard", scheme+"://"+m.ln.Addr().String()+"/ui/", "metrics", scheme+"://"+m.ln.Addr().String()+"/metrics")
	if tcp, ok := m.ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && token == "" && m.clients == nil {
		log.Warn("listening beyond loopback without --token-file or --clients: whoever reaches this address can create and kill jobs")
	}
	return nil
}

func retentionText(d time.Duration) string {
	if d == 0 {
		return "keep finished jobs"
	}
	return d.String()
}

// readToken reads the bearer token: the file's content without surrounding
// blanks. It warns when others may read the file.
func readToken(path string, log *slog.Logger) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the token file is readable by others; chmod 600 it", "file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s: want one token on one line", path)
	}
	return tok, nil
}

// Lost is closed when this node lost its lease in the cluster; the daemon
// then exits so that a restart joins the cluster again.
func (m *Main) Lost() <-chan struct{} {
	if m.manager == nil {
		return nil
	}
	return m.manager.Lost()
}

// Addr is the address the server listens on (useful with port 0).
func (m *Main) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// Close stops accepting requests, lets running ones finish for a while, and
// closes the job manager. Running uploaders keep running; the next start
// takes them over.
func (m *Main) Close() error {
	var errs []error
	if m.server != nil {
		m.api.StopStreams()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		if err := m.server.Shutdown(ctx); err != nil {
			m.Logger.Warn("requests still running at shutdown were cut", "err", err)
			m.server.Close()
		}
		cancel()
		if err := <-m.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
		m.server = nil
	} else if m.ln != nil {
		m.ln.Close()
	}
	if m.clients != nil {
		m.clients.Close()
		m.clients = nil
	}
	if m.manager != nil {
		errs = append(errs, m.manager.Close())
		m.manager = nil
	}
	return errors.Join(errs...)
}

// minFreeSpace maps --min-free-space (0: no check) to backend.Config's
// MinFreeSpace (0: the default, < 0: no check).
func minFreeSpace(b byteSize) int64 {
	if b == 0 {
		return -1
	}
	return int64(b)
}

// isExecutable reports whether path is a regular file someone may execute.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// shimText says in the start-up log which program supervises each upload.
func shimText(path string) string {
	if path == "" {
		return "this program (no cloudupload-shim beside it: each job starts ~10 ms slower)"
	}
	return path
}
