package registry

import (
	"testing"

	cloudupload "github.com/cloudupload/cloudupload"
)

func TestNamesUniqueAndValid(t *testing.T) {
	seen := map[string]bool{}
	for _, tg := range All() {
		name := tg.Name()
		if err := cloudupload.CheckTargetName(name); err != nil {
			t.Errorf("target name %q: %v", name, err)
		}
		if seen[name] {
			t.Errorf("target %q listed twice", name)
		}
		seen[name] = true
		got, ok := Lookup(name)
		if !ok || got.Name() != name {
			t.Errorf("Lookup(%q) = %v, %v", name, got, ok)
		}
	}
	if _, ok := Lookup("no-such-target"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}
}
