//go:build !linux

package azure

import "errors"

func dropCache(string) error { return errors.New("dropping the page cache needs Linux") }
