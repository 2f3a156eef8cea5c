package lazyre

import (
	"sync"
	"testing"
)

func TestLazy(t *testing.T) {
	r := New(`^a(\d+)$`)
	if r.re != nil {
		t.Fatal("compiled before first use")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !r.MatchString("a12") || r.MatchString("b12") {
				t.Error("MatchString")
			}
		}()
	}
	wg.Wait()
	if m := r.FindStringSubmatch("a7"); len(m) != 2 || m[1] != "7" {
		t.Errorf("FindStringSubmatch: %q", m)
	}
	if s := r.ReplaceAllString("a5", "x$1"); s != "x5" {
		t.Errorf("ReplaceAllString: %q", s)
	}
	if s := New(`\d`).ReplaceAllStringFunc("a1b2", func(string) string { return "#" }); s != "a#b#" {
		t.Errorf("ReplaceAllStringFunc: %q", s)
	}
}

func TestInvalidPanicsOnUse(t *testing.T) {
	r := New(`(`)
	defer func() {
		if recover() == nil {
			t.Error("an invalid expression did not panic on use")
		}
	}()
	r.MatchString("x")
}
