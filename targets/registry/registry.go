// Package registry lists the targets the uploader knows, explicitly: no
// init() registration. A target author adds one line to All once the
// target's package compiles.
package registry

import (
	"sort"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/azure"
	"github.com/cloudupload/cloudupload/targets/ec2"
	"github.com/cloudupload/cloudupload/targets/mirror"
	"github.com/cloudupload/cloudupload/targets/s3"
)

// All returns a fresh instance of every known target, sorted by name.
func All() []targets.Target {
	all := []targets.Target{
		// One line per target, e.g. ec2.New(),
		azure.New(),
		ec2.New(),
		mirror.New(),
		s3.New(),
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name() < all[j].Name() })
	return all
}

// Lookup returns the target called name.
func Lookup(name string) (targets.Target, bool) {
	for _, t := range All() {
		if t.Name() == name {
			return t, true
		}
	}
	return nil, false
}

// Names returns the names of every known target, sorted.
func Names() []string {
	var names []string
	for _, t := range All() {
		names = append(names, t.Name())
	}
	return names
}
