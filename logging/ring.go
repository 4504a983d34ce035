package logging

import "sync"

// Ring keeps the newest entries in memory for the Logs page. It is a Sink.
type Ring struct {
	mu    sync.Mutex
	buf   []Entry
	start int // index of the oldest entry
	n     int
	total uint64
	subs  map[int]chan struct{}
	next  int
}

// NewRing returns a ring holding at most size entries (size <= 0 means
// DefaultRingSize).
func NewRing(size int) *Ring {
	if size <= 0 {
		size = DefaultRingSize
	}
	return &Ring{buf: make([]Entry, size), subs: map[int]chan struct{}{}}
}

// Write adds e, dropping the oldest entry when full, and notifies the
// subscribers.
func (r *Ring) Write(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = e
		r.n++
	} else {
		r.buf[r.start] = e
		r.start = (r.start + 1) % len(r.buf)
	}
	r.total++
	for _, ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending; it covers this entry too
		}
	}
}

// Entries returns a copy of the entries, oldest first.
func (r *Ring) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Entry, r.n)
	for i := range r.n {
		out[i] = r.buf[(r.start+i)%len(r.buf)]
	}
	return out
}

// Len is the number of entries held.
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Total is the number of entries ever written, so a view can tell how many
// are new since it last looked.
func (r *Ring) Total() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// Subscribe returns a channel that receives a value after entries were
// written. Notifications are coalesced: one pending value stands for any
// number of new entries, so a slow reader never blocks logging. Call cancel
// when done; the channel is not closed.
func (r *Ring) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	id := r.next
	r.next++
	r.subs[id] = ch
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.subs, id)
		r.mu.Unlock()
	}
}
