package httpapi

import (
	"context"
	"testing"
	"time"
)

// TestBudgetOrder: waiters are served in arrival order, so a large body is
// not starved by small ones; a waiter that gives up lets the next one in.
func TestBudgetOrder(t *testing.T) {
	b := newBudget(10)
	ctx := context.Background()
	if !b.acquire(ctx, 5) {
		t.Fatal("5 of 10 not granted")
	}
	large := make(chan bool)
	go func() { large <- b.acquire(ctx, 8) }()
	waitWaiters(t, b, 1)
	// 1 byte would fit, but the large waiter came first.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if b.acquire(short, 1) {
		t.Error("a small request overtook a waiting large one")
	}
	cancel()
	b.release(5)
	if !<-large {
		t.Fatal("the large waiter was not served")
	}
	if !b.acquire(ctx, 2) {
		t.Error("2 bytes not granted with 2 free")
	}

	// A waiter that gives up lets the one behind it in.
	giveUp, cancel := context.WithCancel(ctx)
	first := make(chan bool)
	go func() { first <- b.acquire(giveUp, 10) }()
	waitWaiters(t, b, 1)
	second := make(chan bool)
	go func() { second <- b.acquire(ctx, 0) }()
	waitWaiters(t, b, 2)
	cancel()
	if <-first || !<-second {
		t.Error("cancelling the first waiter did not serve the second")
	}
	b.release(10)
	if b.free != 10 || len(b.waiters) != 0 {
		t.Errorf("free %d, %d waiters", b.free, len(b.waiters))
	}
}

func waitWaiters(t *testing.T, b *budget, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		got := len(b.waiters)
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters, want %d", got, n)
		}
	}
}

func TestBodyDeadline(t *testing.T) {
	for size, want := range map[int64]time.Duration{
		-1:       2 * time.Minute,
		0:        10 * time.Second,
		1 << 20:  26 * time.Second,  // a full skeleton
		10 << 20: 170 * time.Second, // full target data
	} {
		if got := bodyDeadline(size); got != want {
			t.Errorf("bodyDeadline(%d) = %s, want %s", size, got, want)
		}
	}
}
