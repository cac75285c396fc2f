package main

import (
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pb "tickfan/gen/events/v1"
)

// The guide's event store and pub/sub, in memory, one per topic.
//
// Store: a ring of the last N events (N = --ring). Slots are atomic pointers,
// so replaying streams read without a lock: a slot whose event has another
// seq was overwritten (the event is no longer retained).
//
// Pub/sub: every subscriber owns a bounded channel (--buffer). The publisher
// (whoever appends, under t.mu) sends each event to every subscriber whose
// filter matches, without ever blocking: when a channel is full the event is
// dropped for that subscriber and counted, and the subscriber is told with a
// Gap{GAP_SLOW_CONSUMER, missed} as soon as its channel has room again
// (OVERFLOW_DISCONNECT instead ends that stream). A slow consumer never slows
// the feed or the other subscribers.

type event struct {
	seq        uint64
	ingestedUs int64
	kind, key  string // interned per topic
	enc        []byte // the whole WatchEvent, encoded once
	gap        bool   // an upstream-loss Gap: passes every filter
}

// item is what travels in a subscriber's channel: an event, or the report
// of the events dropped since the last item (a slow-consumer Gap).
type item struct {
	ev   *event
	drop *dropReport
}

type dropReport struct {
	missed  uint64 // matching events dropped
	fromSeq uint64 // the range starts after this seq
	lastSeq uint64 // the last dropped seq: the stream continues after it
}

type subscriber struct {
	ch         chan item
	f          *filter
	disconnect bool          // OVERFLOW_DISCONNECT
	kicked     chan struct{} // closed when a disconnect subscriber overflows
	// under topic.mu
	dropped  uint64
	dropFrom uint64
	dropLast uint64
	dead     bool
	index    int
}

type topic struct {
	name   string
	epoch  uint64
	prefix []byte // "1-<epoch hex>-"
	size   uint64 // ring capacity, events
	ring   []atomic.Pointer[event]
	head   atomic.Uint64 // newest seq, stored after the event is in the ring and dispatched

	mu         sync.Mutex // appends and the subscriber set
	subs       []*subscriber
	interned   map[string]string
	lastIngest int64
	scratch    scratchEvent

	appended  atomic.Uint64
	slowDrops atomic.Uint64
	gaps      atomic.Uint64
}

// Reused message structs: appends are serialised by t.mu.
type scratchEvent struct {
	we   pb.WatchEvent
	data pb.Data
	wd   pb.WatchEvent_Data
	gap  pb.Gap
	wg   pb.WatchEvent_Gap
}

const maxInterned = 1 << 16

func newTopic(name string, ringSize uint64, epoch uint64) *topic {
	t := &topic{
		name:     name,
		epoch:    epoch,
		size:     ringSize,
		ring:     make([]atomic.Pointer[event], ringSize),
		interned: make(map[string]string),
	}
	t.prefix = appendCursor(nil, epoch, 0)
	t.prefix = t.prefix[:len(t.prefix)-1]
	return t
}

func (t *topic) cursor(seq uint64) string {
	var buf [cursorTextMax]byte
	b := append(buf[:0], t.prefix...)
	return string(appendUint(b, seq))
}

func appendUint(b []byte, v uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// intern returns a shared string for b (no allocation for known values).
func (t *topic) intern(b []byte) string {
	if s, ok := t.interned[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(t.interned) < maxInterned {
		t.interned[s] = s
	}
	return s
}

// firstRetained is the oldest seq the ring holds when the head is h.
func (t *topic) firstRetained(h uint64) uint64 {
	if h < t.size {
		return 1
	}
	return h - t.size + 1
}

// get returns the event with this seq, or nil when it is not retained.
func (t *topic) get(seq uint64) *event {
	ev := t.ring[seq%t.size].Load()
	if ev == nil || ev.seq != seq {
		return nil
	}
	return ev
}

func nowMicros() int64 { return time.Now().UnixMicro() }

// ingestTime: the server clock, never going backwards within a topic (so
// START_AT_TIME can binary-search the ring). Under t.mu.
func (t *topic) ingestTime() int64 {
	now := nowMicros()
	if now < t.lastIngest {
		now = t.lastIngest
	}
	t.lastIngest = now
	return now
}

// appendData appends one data event. kind, key and body are copied.
func (t *topic) appendData(kind, key, body []byte, emittedUs int64) uint64 {
	t.mu.Lock()
	seq := t.head.Load() + 1
	ev := &event{seq: seq, ingestedUs: t.ingestTime(), kind: t.intern(kind), key: t.intern(key)}
	s := &t.scratch
	s.data.Kind, s.data.Key, s.data.Body = ev.kind, ev.key, body
	s.data.EmittedAtUnixMicros = emittedUs
	s.data.Seq = seq
	s.data.IngestedAtUnixMicros = ev.ingestedUs
	s.wd.Data = &s.data
	s.we.Payload = &s.wd
	s.we.Cursor = t.cursor(seq)
	ev.enc = marshalExact(&s.we)
	s.data.Body = nil
	t.publish(ev)
	t.mu.Unlock()
	t.appended.Add(1)
	return seq
}

// appendUpstreamGap appends a Gap{GAP_UPSTREAM_LOSS} event: it takes a seq
// like any event and reaches every subscriber, whatever its filters.
func (t *topic) appendUpstreamGap(missed uint64) uint64 {
	t.mu.Lock()
	seq := t.head.Load() + 1
	ev := &event{seq: seq, ingestedUs: t.ingestTime(), gap: true}
	s := &t.scratch
	s.gap.Missed = missed
	s.gap.Reason = pb.GapReason_GAP_UPSTREAM_LOSS
	s.gap.FromCursor = t.cursor(seq - 1)
	s.wg.Gap = &s.gap
	s.we.Payload = &s.wg
	s.we.Cursor = t.cursor(seq)
	ev.enc = marshalExact(&s.we)
	t.publish(ev)
	t.mu.Unlock()
	t.gaps.Add(1)
	return seq
}

func marshalExact(m proto.Message) []byte {
	n := proto.Size(m)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, n), m)
	if err != nil {
		panic(err) // only on a programming error: every field here is valid
	}
	return b
}

// publish stores ev in the ring and offers it to every subscriber. Under t.mu.
func (t *topic) publish(ev *event) {
	t.ring[ev.seq%t.size].Store(ev)
	for _, s := range t.subs {
		if s.dead || (!ev.gap && !s.f.match(ev.kind, ev.key)) {
			continue
		}
		if s.dropped > 0 {
			// Report the drops before anything newer.
			select {
			case s.ch <- item{drop: &dropReport{missed: s.dropped, fromSeq: s.dropFrom, lastSeq: s.dropLast}}:
				s.dropped = 0
			default:
				s.dropped++
				s.dropLast = ev.seq
				t.slowDrops.Add(1)
				continue
			}
		}
		select {
		case s.ch <- item{ev: ev}:
		default:
			t.overflow(s, ev)
		}
	}
	t.head.Store(ev.seq)
}

func (t *topic) overflow(s *subscriber, ev *event) {
	if s.disconnect {
		s.dead = true
		close(s.kicked)
		return
	}
	if s.dropped == 0 {
		s.dropFrom = ev.seq - 1
	}
	s.dropped++
	s.dropLast = ev.seq
	t.slowDrops.Add(1)
}

// subscribe adds s; under t.mu (the caller holds it to hand over from replay
// to live without a gap or an overlap).
func (t *topic) subscribeLocked(s *subscriber) {
	s.index = len(t.subs)
	t.subs = append(t.subs, s)
}

func (t *topic) unsubscribe(s *subscriber) {
	t.mu.Lock()
	i := s.index
	last := len(t.subs) - 1
	if i <= last && t.subs[i] == s {
		t.subs[i] = t.subs[last]
		t.subs[i].index = i
		t.subs[last] = nil
		t.subs = t.subs[:last]
	}
	s.dead = true
	t.mu.Unlock()
}

func (t *topic) subscriberCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.subs)
}

// seekTime returns the first retained seq ingested at or after us, or head+1.
func (t *topic) seekTime(us int64) uint64 {
	for {
		h := t.head.Load()
		lo, hi := t.firstRetained(h), h+1 // answer in [lo, hi]
		ok := true
		for lo < hi {
			mid := lo + (hi-lo)/2
			ev := t.get(mid)
			if ev == nil {
				ok = false // evicted under us: start over
				break
			}
			if ev.ingestedUs >= us {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		if ok {
			return lo
		}
	}
}
