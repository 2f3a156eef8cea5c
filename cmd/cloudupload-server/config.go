package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend"
	"github.com/cloudupload/cloudupload/internal/cli"
)

// Config is the daemon's configuration, from flags and the config file.
type Config struct {
	Listen            string
	StateDir          string
	BuildRoot         string
	RepServer         string
	Uploader          string
	Shim              string
	MaxUploads        int
	MaxUploadsPerUser int
	KillGrace         time.Duration
	Retention         time.Duration
	ReceiveIdle       time.Duration
	MinFreeSpace      byteSize
	Mirrors           mirrors
	ConfigFile        string
	TLSCert, TLSKey   string
	TokenFile         string
	ClientsFile       string
	PrivateReads      bool
	PubKey, PrivKey   string
	LogLevel          string
	MaxConnections    int
	MemoryLimit       int // MiB, the Go runtime's soft limit; 0: none

	// A node of a cluster (see cluster.go).
	Database     string
	Node         string
	AdvertiseURL string
	Lease        time.Duration
	NodeUploads  int
}

// mirrors is the repeatable --mirror NAME=DIR.
type mirrors []string

func (m *mirrors) String() string { return strings.Join(*m, ",") }

func (m *mirrors) Set(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	name, dir = strings.TrimSpace(name), strings.TrimSpace(dir)
	if !ok || name == "" || dir == "" {
		return fmt.Errorf("want NAME=DIR, not %q", v)
	}
	if err := cloudupload.CheckName("mirror name", name); err != nil {
		return err
	}
	if strings.Contains(name+dir, ",") {
		return fmt.Errorf("mirror directory %q must not contain ','", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, e := range *m {
		if strings.HasPrefix(e, name+"=") {
			return fmt.Errorf("mirror %q is given twice", name)
		}
	}
	*m = append(*m, name+"="+abs)
	return nil
}

// byteSize is a size in bytes given as a number with an optional unit: K,
// M, G or T (powers of 1024, with or without a trailing "iB" or "B").
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(v string) error {
	s := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(v), "B"), "i")
	shift := 0
	if n := len(s); n > 0 {
		if i := strings.IndexByte("KMGT", s[n-1]&^0x20); i >= 0 {
			shift, s = 10*(i+1), s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return fmt.Errorf("want a size such as 512M or 2G, not %q", v)
	}
	*b = byteSize(n << shift)
	return nil
}

var errHelp = flag.ErrHelp

// flagSet declares the flags into c.
func (c *Config) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("cloudupload-server", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: cloudupload-server [flags]   (flags may also be set in --config FILE)")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:5452", "`HOST:PORT` to serve the API on")
	fs.StringVar(&c.StateDir, "state-dir", "./state", "`DIR` holding the jobs, the id counter and the generated key pair")
	fs.StringVar(&c.BuildRoot, "build-root", "", "build tree `DIR`: images are DIR/<project>/<repository>/<arch>/<package>/<filename>")
	fs.StringVar(&c.RepServer, "repserver", "", "OBS repository server `URL`: images are fetched from URL/build/<project>/<repository>/<arch>/<package>/<filename>")
	fs.StringVar(&c.Uploader, "uploader", "", "`PATH` of the uploader (default: clouduploader beside this program)")
	fs.StringVar(&c.Shim, "shim", "", "`PATH` of cloudupload-shim, started for each job to supervise its uploader (default: beside this program; without it, this program re-executes itself, which starts slower)")
	fs.IntVar(&c.MaxUploads, "max-uploads", 4, "uploads running at once")
	fs.IntVar(&c.MaxUploadsPerUser, "max-uploads-per-user", 2, "uploads running at once for one user")
	fs.DurationVar(&c.KillGrace, "kill-grace", 30*time.Second, "time between SIGTERM and SIGKILL when a job is killed")
	fs.DurationVar(&c.Retention, "retention", 0, "remove finished jobs this long after they ended (0: keep them)")
	fs.DurationVar(&c.ReceiveIdle, "receive-idle-timeout", backend.DefaultReceiveIdleTimeout, "fail a job whose image stops arriving for this long")
	c.MinFreeSpace = backend.DefaultMinFreeSpace
	fs.Var(&c.MinFreeSpace, "min-free-space", "`SIZE` of free space the state directory keeps: images that would take it lower are refused (507) before a byte is written; 0 disables the check (default 256M)")
	fs.Var(&c.Mirrors, "mirror", "`NAME=DIR` a directory the mirror target may publish to (repeatable)")
	fs.StringVar(&c.ConfigFile, "config", "", "config `FILE`: lines `key = value` with the flag names; flags given on the command line win")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "TLS certificate `FILE` (PEM); with --tls-key, serve HTTPS")
	fs.StringVar(&c.TLSKey, "tls-key", "", "TLS private key `FILE` (PEM)")
	fs.StringVar(&c.TokenFile, "token-file", "", "`FILE` holding the bearer token POST and PUT requests must carry")
	fs.StringVar(&c.ClientsFile, "clients", "", "`FILE` of pushing clients, one a line: NAME sha256=<hex of its token> [target=,tree=,series=,user= lists]; re-read on SIGHUP")
	fs.BoolVar(&c.PrivateReads, "private-reads", false, "GET requests need the token or a client too (default: reads are open)")
	fs.StringVar(&c.PubKey, "pubkey", "", "public key `FILE` (PEM) served at /cloudupload/_pubkey (default: generated in the state dir)")
	fs.StringVar(&c.PrivKey, "privkey", "", "private key `FILE` (PEM) given to uploaders to decrypt secrets (default: generated in the state dir)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&c.MaxConnections, "max-connections", 512, "client connections open at once (more wait to be accepted)")
	fs.StringVar(&c.Database, "database", "", "PostgreSQL `URL` (postgres://user@host/db): keep the jobs there, shared with the other nodes of a cluster (default: in the state directory). Keep its password out of the command line: config file, PGPASSWORD or ~/.pgpass")
	fs.StringVar(&c.Node, "node", "", "this node's `NAME` in the cluster (default: the host name)")
	fs.StringVar(&c.AdvertiseURL, "advertise-url", "", "`URL` other nodes reach this node's API by (required with --database)")
	fs.DurationVar(&c.Lease, "lease", 30*time.Second, "with --database: a node that has not renewed its lease for this long is lost, and its jobs are taken over")
	fs.IntVar(&c.NodeUploads, "node-uploads", 0, "with --database: uploads running at once on this node (0: --max-uploads); --max-uploads and --max-uploads-per-user hold for the whole cluster")
	fs.IntVar(&c.MemoryLimit, "memory-limit", 40, "soft memory limit of the Go runtime in `MiB` (0: none; GOMEMLIMIT in the environment wins)")
	return fs
}

// parse reads the command line, then the config file for what the command
// line did not set. --help prints the usage to stdout (errHelp).
func (c *Config) parse(args []string, stdout io.Writer) error {
	fs := c.flagSet()
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if u, err := url.Parse(c.Database); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return errors.New("--database: no password on the command line (every user can read it in ps): put it in the config file, PGPASSWORD or ~/.pgpass")
		}
	}
	if c.ConfigFile == "" {
		return nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	f, err := os.Open(c.ConfigFile)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	entries, err := cli.ParseConfig(f)
	if err != nil {
		return fmt.Errorf("config %s: %w", c.ConfigFile, err)
	}
	for _, e := range entries {
		fl := fs.Lookup(e.Key)
		switch {
		case fl == nil || e.Key == "config":
			return fmt.Errorf("config %s:%d: unknown key %q", c.ConfigFile, e.Line, e.Key)
		case set[e.Key]:
			continue // the command line wins
		}
		if err := fs.Set(e.Key, e.Value); err != nil {
			return fmt.Errorf("config %s:%d: %s: %w", c.ConfigFile, e.Line, e.Key, err)
		}
	}
	return nil
}

// check validates the combination of settings.
func (c *Config) check() error {
	switch {
	case c.BuildRoot != "" && c.RepServer != "":
		return errors.New("give --build-root or --repserver, not both")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case c.PrivateReads && c.TokenFile == "" && c.ClientsFile == "":
		return errors.New("--private-reads needs --token-file or --clients: there is no credential to ask for")
	case c.MaxUploads < 1:
		return errors.New("--max-uploads must be at least 1")
	case c.MaxUploadsPerUser < 1:
		return errors.New("--max-uploads-per-user must be at least 1")
	case c.KillGrace <= 0:
		return errors.New("--kill-grace must be positive")
	case c.Retention < 0:
		return errors.New("--retention must not be negative")
	case c.ReceiveIdle <= 0:
		return errors.New("--receive-idle-timeout must be positive")
	case c.StateDir == "":
		return errors.New("--state-dir is required")
	case c.MaxConnections < 1:
		return errors.New("--max-connections must be at least 1")
	case c.MemoryLimit < 0:
		return errors.New("--memory-limit must not be negative")
	case c.Shim != "" && !isExecutable(c.Shim):
		return fmt.Errorf("--shim %s: not an executable file", c.Shim)
	}
	if err := c.checkCluster(); err != nil {
		return err
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	return c.checkMirrors()
}

// checkMirrors refuses a mirror whose directory is missing, not a
// directory or not writable: every job for it would fail later.
func (c *Config) checkMirrors() error {
	for _, m := range c.Mirrors {
		name, dir, _ := strings.Cut(m, "=")
		fi, err := os.Stat(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("--mirror %s=%s: the directory does not exist", name, dir)
		case err != nil:
			return fmt.Errorf("--mirror %s=%s: %w", name, dir, unwrapPath(err))
		case !fi.IsDir():
			return fmt.Errorf("--mirror %s=%s: not a directory", name, dir)
		}
		if err := syscall.Access(dir, 2|1); err != nil { // W_OK|X_OK
			return fmt.Errorf("--mirror %s=%s: the directory is not writable: %w", name, dir, err)
		}
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
