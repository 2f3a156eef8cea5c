package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSettingsPrecedence: flags > environment > config file > defaults,
// for the URL, the token and the user.
func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cloudupload", "config")
	os.MkdirAll(filepath.Dir(cfg), 0o700)
	os.WriteFile(cfg, []byte("# comment\n\nurl = http://file:1\ntoken = file-token\nuser = fileuser\n"), 0o600)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("flag-token\n"), 0o600)
	envOf := func(kv ...string) func(string) string {
		m := map[string]string{"XDG_CONFIG_HOME": dir, "USER": "login"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name             string
		flags            settings
		env              func(string) string
		url, token, user string
	}{
		{"file", settings{}, envOf(), "http://file:1", "file-token", "fileuser"},
		{"env", settings{}, envOf(EnvURL, "http://env:1", EnvToken, "env-token", EnvUser, "envuser"), "http://env:1", "env-token", "envuser"},
		{"flags", settings{URL: "http://flag:1", TokenFile: tokenFile, User: "flaguser"},
			envOf(EnvURL, "http://env:1", EnvToken, "env-token", EnvUser, "envuser"), "http://flag:1", "flag-token", "flaguser"},
		{"defaults", settings{Config: filepath.Join(dir, "empty")}, envOf(), "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "defaults" {
				os.WriteFile(tc.flags.Config, nil, 0o600)
				tc.url, tc.user = DefaultURL, "login"
			}
			s := tc.flags
			var warn bytes.Buffer
			if err := s.resolve(tc.env, &warn); err != nil {
				t.Fatal(err)
			}
			if s.URL != tc.url || s.Token != tc.token || s.User != tc.user || warn.Len() != 0 {
				t.Errorf("got url %q token %q user %q (warnings %q); want %q %q %q", s.URL, s.Token, s.User, warn.String(), tc.url, tc.token, tc.user)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	env := func(k string) string { return map[string]string{"HOME": dir}[k] }
	// No config file at the default place is fine; an explicit one must exist.
	s := settings{}
	if err := s.resolve(env, &bytes.Buffer{}); err != nil || s.URL != DefaultURL {
		t.Errorf("no config file: %v, %q", err, s.URL)
	}
	s = settings{Config: filepath.Join(dir, "missing")}
	if err := s.resolve(env, &bytes.Buffer{}); err == nil {
		t.Error("a missing --config file was accepted")
	}
	bad := filepath.Join(dir, "bad")
	for content, want := range map[string]string{
		"url http://x\n":   "bad:1: want `key = value`",
		"\npassword = x\n": `bad:2: unknown key "password"`,
	} {
		os.WriteFile(bad, []byte(content), 0o600)
		s = settings{Config: bad}
		if err := s.resolve(env, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", content, err, want)
		}
	}
	// token-file in a config file is relative to that file.
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	os.WriteFile(filepath.Join(sub, "tok"), []byte("from-file\n"), 0o600)
	os.WriteFile(filepath.Join(sub, "config"), []byte("token-file = tok\n"), 0o600)
	s = settings{Config: filepath.Join(sub, "config")}
	if err := s.resolve(env, &bytes.Buffer{}); err != nil || s.Token != "from-file" {
		t.Errorf("relative token-file: %q, %v", s.Token, err)
	}
	empty := filepath.Join(dir, "empty-token")
	os.WriteFile(empty, []byte("\n"), 0o600)
	s = settings{TokenFile: empty}
	if err := s.resolve(env, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
}
