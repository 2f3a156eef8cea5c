package httpapi

import "testing"

func TestSeriesWithin(t *testing.T) {
	allowed := []string{"kernel-hwpacks", "android/", "a/b"}
	for series, want := range map[string]bool{
		"kernel-hwpacks":       true,
		"kernel-hwpacks/arm64": true,
		"kernel-hwpacks-evil":  false,
		"kernel":               false,
		"android":              true,
		"android/aosp/master":  true,
		"a/b":                  true,
		"a/b/c":                true,
		"a":                    false,
		"a/bc":                 false,
		"android/../etc":       false,
		"android//x":           false,
		"android/./x":          false,
		"":                     false,
		"/kernel-hwpacks":      false,
		"kernel-hwpacks/":      false,
	} {
		if got := seriesWithin(series, allowed); got != want {
			t.Errorf("seriesWithin(%q) = %v, want %v", series, got, want)
		}
	}
}
