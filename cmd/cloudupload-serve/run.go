package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload/download"
	"github.com/cloudupload/cloudupload/internal/atomicfile"
	"github.com/cloudupload/cloudupload/internal/credfile"
	"github.com/cloudupload/cloudupload/targets/mirror"
)

const shutdownGrace = 10 * time.Second

// maxThemeCSS bounds --theme-css: it is sent with every page.
const maxThemeCSS = 256 << 10

var errHelp = flag.ErrHelp

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// Config is the command line.
type Config struct {
	Mirrors      list
	Listen       string
	TLSCert      string
	TLSKey       string
	Users        string
	TrustProxy   string
	UserHeader   string
	GroupsHeader string
	UserDataLog  string
	AccessLog    string
	CookieKey    string
	ThemeCSS     string
	LogLevel     string
}

// Main is the server: ParseFlags, Run, then Close. Tests run it on port 0.
type Main struct {
	Config Config
	Logger *slog.Logger
	Stdout io.Writer // usage (--help) and the access log "-"
	Stderr io.Writer // logs and errors

	trees    []mirror.Tree
	proxy    netip.Prefix
	handler  *download.Handler
	server   *http.Server
	ln       net.Listener
	served   chan error
	users    *credfile.Reloader
	logs     []*logFile
	cancel   context.CancelFunc
	watching chan struct{}
}

// NewMain returns a Main writing to the process's stdout and stderr.
func NewMain() *Main {
	return &Main{Stdout: os.Stdout, Stderr: os.Stderr, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
}

func (m *Main) flagSet() *flag.FlagSet {
	c := &m.Config
	fs := flag.NewFlagSet("cloudupload-serve", flag.ContinueOnError)
	fs.Var(&c.Mirrors, "mirror", "serve the tree in directory DIR at /NAME/, given as `NAME=DIR` (repeatable)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "listen on `ADDR` (host:port)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with the certificate chain in `FILE` (PEM)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "the private key of --tls-cert, in `FILE` (PEM)")
	fs.StringVar(&c.Users, "users", "", "users in `FILE`: one per line, NAME sha256=<hex of the token> groups=A,B (re-read on SIGHUP)")
	fs.StringVar(&c.TrustProxy, "trust-proxy", "", "believe the user and groups headers only from `ADDR` (an IP address or network, e.g. 127.0.0.1 or 10.0.0.0/24): the SSO proxy in front")
	fs.StringVar(&c.UserHeader, "user-header", "X-Forwarded-User", "the trusted proxy's `HEADER` naming the user")
	fs.StringVar(&c.GroupsHeader, "groups-header", "X-Forwarded-Groups", "the trusted proxy's `HEADER` listing the user's groups, comma-separated")
	fs.StringVar(&c.UserDataLog, "user-data-log", "", "append the name and e-mail address asked by Collect-User-Data licences to `FILE` (one JSON line each); without it such licences cannot be accepted")
	fs.StringVar(&c.AccessLog, "access-log", "-", "append the access log to `FILE` (\"-\": standard output, \"\": none)")
	fs.StringVar(&c.CookieKey, "cookie-key", "", "the key signing licence cookies, kept in `FILE` (created when missing); without it a new key at each start forgets every acceptance")
	fs.StringVar(&c.ThemeCSS, "theme-css", "", "add the stylesheet in `FILE` to every page, e.g. rules for body.theme-NAME, the class of a licence page whose Theme is NAME")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	return fs
}

// ParseFlags reads and checks the command line. --help prints the usage
// to Stdout and returns errHelp.
func (m *Main) ParseFlags(args []string) error {
	fs := m.flagSet()
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(m.Stdout)
		fmt.Fprintln(m.Stdout, "usage: cloudupload-serve --mirror NAME=DIR... [flags]\n\nServes mirror trees for download and enforces their BUILD-INFO.txt.\n\nFlags:")
		fs.PrintDefaults()
		return errHelp
	}
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c := &m.Config
	if len(c.Mirrors) == 0 {
		return errors.New("no tree to serve: give --mirror NAME=DIR")
	}
	for _, s := range c.Mirrors {
		name, dir, ok := strings.Cut(s, "=")
		if !ok || strings.TrimSpace(dir) == "" {
			return fmt.Errorf("--mirror %q: want NAME=DIR", s)
		}
		abs, err := filepath.Abs(strings.TrimSpace(dir))
		if err != nil {
			return fmt.Errorf("--mirror %s: %w", s, err)
		}
		t, err := mirror.ParseTrees(strings.TrimSpace(name) + "=" + abs)
		if err != nil {
			return fmt.Errorf("--mirror: %w", err)
		}
		for _, have := range m.trees {
			if have.Name == t[0].Name {
				return fmt.Errorf("--mirror %s is given twice", t[0].Name)
			}
		}
		m.trees = append(m.trees, t...)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.TrustProxy != "" {
		p, err := netip.ParsePrefix(c.TrustProxy)
		if err != nil {
			a, aerr := netip.ParseAddr(c.TrustProxy)
			if aerr != nil {
				return fmt.Errorf("--trust-proxy %q: want an IP address or a network such as 10.0.0.0/24", c.TrustProxy)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		m.proxy = p.Masked()
	}
	for _, h := range []struct{ flag, v string }{{"--user-header", c.UserHeader}, {"--groups-header", c.GroupsHeader}} {
		if h.v == "" || strings.ContainsAny(h.v, " :\t\r\n") {
			return fmt.Errorf("%s %q is not a header name", h.flag, h.v)
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	m.Logger = slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: level}))
	return nil
}

// Run opens the trees and files and starts serving; it returns once the
// server listens. hup (may be nil) triggers a reload of the users file.
func (m *Main) Run(ctx context.Context, hup <-chan os.Signal) (err error) {
	c := &m.Config
	log := m.Logger
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	cfg := download.Config{Trees: m.trees, TrustProxy: m.proxy, UserHeader: c.UserHeader, GroupsHeader: c.GroupsHeader, Log: log}
	if c.Users != "" {
		users, err := credfile.NewReloader(c.Users)
		if err != nil {
			return fmt.Errorf("--users: %w", err)
		}
		if fi, err := os.Stat(c.Users); err == nil && fi.Mode().Perm()&0o002 != 0 {
			log.Warn("the users file is writable by everyone", "file", c.Users)
		}
		cfg.Users, m.users = users, users
	}
	if c.ThemeCSS != "" {
		b, err := os.ReadFile(c.ThemeCSS)
		if err != nil {
			return fmt.Errorf("--theme-css: %w", err)
		}
		if len(b) > maxThemeCSS || strings.Contains(strings.ToLower(string(b)), "</style") {
			return fmt.Errorf("--theme-css %s: want a stylesheet of at most %d bytes without </style", c.ThemeCSS, maxThemeCSS)
		}
		cfg.ThemeCSS = string(b)
	}
	if cfg.CookieKey, err = loadCookieKey(c.CookieKey, log); err != nil {
		return err
	}
	if c.UserDataLog != "" {
		f, err := m.openLog(c.UserDataLog, 0o600)
		if err != nil {
			return fmt.Errorf("--user-data-log: %w", err)
		}
		cfg.UserData = f
	}
	switch c.AccessLog {
	case "":
	case "-":
		cfg.AccessLog = m.Stdout
	default:
		f, err := m.openLog(c.AccessLog, 0o640)
		if err != nil {
			return fmt.Errorf("--access-log: %w", err)
		}
		cfg.AccessLog = f
	}
	if m.handler, err = download.New(cfg); err != nil {
		return err
	}
	m.server = &http.Server{
		Handler:           m.handler,
		ReadHeaderTimeout: 20 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if m.ln, err = net.Listen("tcp", c.Listen); err != nil {
		return err
	}
	scheme := "http"
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		m.server.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		m.ln = tls.NewListener(m.ln, m.server.TLSConfig)
		scheme = "https"
	}
	m.served = make(chan error, 1)
	go func() { m.served <- m.server.Serve(m.ln) }()
	var wctx context.Context
	wctx, m.cancel = context.WithCancel(ctx)
	m.watching = make(chan struct{})
	go func() { defer close(m.watching); m.onHangup(wctx, hup) }()
	var names []string
	for _, t := range m.trees {
		names = append(names, t.Name+"="+t.Dir)
	}
	log.Info("listening", "url", scheme+"://"+m.ln.Addr().String(), "mirrors", strings.Join(names, ","),
		"users", c.Users, "trust_proxy", c.TrustProxy, "user_data_log", c.UserDataLog, "access_log", c.AccessLog)
	if tcp, ok := m.ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && c.TLSCert == "" && c.TrustProxy == "" {
		log.Warn("listening beyond loopback without TLS: tokens and Basic passwords cross the network in clear; use --tls-cert or a TLS proxy in front")
	}
	return nil
}

// Addr is the address the server listens on (after Run).
func (m *Main) Addr() string { return m.ln.Addr().String() }

func (m *Main) openLog(path string, perm os.FileMode) (*logFile, error) {
	l, err := openLog(path, perm)
	if err != nil {
		return nil, err
	}
	m.logs = append(m.logs, l)
	return l, nil
}

// onHangup re-reads the users file and reopens the log files on every
// signal from hup until ctx is done; a failure keeps what was in use.
func (m *Main) onHangup(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if m.users != nil {
			if err := m.users.Reload(); err != nil {
				m.Logger.Error("users file not reloaded, keeping the previous one", "file", m.users.Path(), "err", err)
			} else {
				m.Logger.Info("users file reloaded", "file", m.users.Path(), "users", len(m.users.Current().Entries))
			}
		}
		for _, l := range m.logs {
			if err := l.Reopen(); err != nil {
				m.Logger.Error("log file not reopened, writing on in the previous one", "file", l.path, "err", err)
			}
		}
		m.Logger.Info("reopened the log files", "files", len(m.logs))
	}
}

// Close stops serving (running requests get shutdownGrace) and closes
// the files.
func (m *Main) Close() error {
	var err error
	if m.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		err = m.server.Shutdown(ctx)
		cancel()
		if serr := <-m.served; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
		m.server = nil
	} else if m.ln != nil {
		m.ln.Close()
	}
	if m.cancel != nil {
		m.cancel()
		<-m.watching
		m.cancel = nil
	}
	if m.handler != nil {
		m.handler.Close()
		m.handler = nil
	}
	for _, l := range m.logs {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	m.logs = nil
	return err
}

// loadCookieKey reads the key from path, creating it (32 random bytes,
// mode 600, written atomically) when missing; path "" means a key for
// this run only.
func loadCookieKey(path string, log *slog.Logger) ([]byte, error) {
	key := make([]byte, 32)
	rand.Read(key)
	if path == "" {
		log.Warn("no --cookie-key: licence acceptances are forgotten at restart")
		return key, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.WriteFile(path, key, 0o600); err != nil {
			return nil, fmt.Errorf("--cookie-key: %w", err)
		}
		log.Info("generated the cookie key", "file", path)
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--cookie-key: %w", err)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("--cookie-key %s: holds %d bytes, want at least 32 (remove it to have one generated)", path, len(b))
	}
	return b, nil
}
