package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cloudupload/cloudupload/internal/cli"
)

// DefaultURL is the server's own default address.
const DefaultURL = "http://127.0.0.1:5452"

// Environment variables read by the client.
const (
	EnvURL    = "CLOUDUPLOAD_URL"
	EnvToken  = "CLOUDUPLOAD_TOKEN"
	EnvUser   = "CLOUDUPLOAD_USER"
	EnvConfig = "CLOUDUPLOAD_CONFIG"
)

// settings is what every command needs to reach the server. Each value
// comes from the first of: a flag, the environment, the config file, a
// default.
type settings struct {
	URL       string
	Token     string
	TokenFile string
	User      string
	Config    string // path of the config file, "" for the default
	JSON      bool
}

// configKeys are the keys a config file may hold.
var configKeys = []string{"url", "token", "token-file", "user"}

// defaultConfigPath is $XDG_CONFIG_HOME/cloudupload/config, or
// ~/.config/cloudupload/config.
func defaultConfigPath(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "cloudupload", "config")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "cloudupload", "config")
	}
	return ""
}

// resolve fills what the flags left empty from the environment, then the
// config file, then the defaults. warn receives notes for the person
// (a config file others may read that holds a token).
func (s *settings) resolve(getenv func(string) string, warn io.Writer) error {
	path, explicit := s.Config, s.Config != ""
	if !explicit {
		if path = getenv(EnvConfig); path != "" {
			explicit = true
		} else {
			path = defaultConfigPath(getenv)
		}
	}
	file := map[string]string{}
	if path != "" {
		var err error
		file, err = readConfig(path)
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			file = map[string]string{}
		} else if err != nil {
			return err
		}
		if file["token"] != "" {
			if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
				fmt.Fprintf(warn, "cloudupload: warning: %s holds a token and others may read it (chmod 600 %s)\n", path, path)
			}
		}
	}
	first := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	s.URL = first(s.URL, getenv(EnvURL), file["url"], DefaultURL)
	s.User = first(s.User, getenv(EnvUser), file["user"])
	if s.User == "" {
		s.User = first(getenv("USER"), currentUser())
	}
	switch {
	case s.TokenFile != "":
		// --token-file beats everything.
	case getenv(EnvToken) != "":
		s.Token = getenv(EnvToken)
	case file["token"] != "":
		s.Token = file["token"]
	case file["token-file"] != "":
		// A relative path in the config file is relative to the file.
		s.TokenFile = file["token-file"]
		if !filepath.IsAbs(s.TokenFile) {
			s.TokenFile = filepath.Join(filepath.Dir(path), s.TokenFile)
		}
	}
	if s.TokenFile != "" {
		b, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return fmt.Errorf("token file: %w", err)
		}
		s.Token = strings.TrimSpace(string(b))
		if s.Token == "" {
			return fmt.Errorf("token file %s is empty", s.TokenFile)
		}
	}
	return nil
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// readConfig reads `key = value` lines as the server's --config does:
// blank lines and lines starting with '#' are skipped, values are taken
// verbatim after trimming blanks; unknown keys are an error naming the
// line.
func readConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	entries, err := cli.ParseConfig(io.LimitReader(f, 1<<20))
	var le *cli.LineError
	if errors.As(err, &le) {
		return nil, fmt.Errorf("config %s:%d: %s", path, le.Line, le.Msg)
	} else if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if !slices.Contains(configKeys, e.Key) {
			return nil, fmt.Errorf("config %s:%d: unknown key %q (known: %s)", path, e.Line, e.Key, strings.Join(configKeys, ", "))
		}
		out[e.Key] = e.Value
	}
	return out, nil
}
