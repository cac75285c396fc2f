package main

import (
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "tickfan/gen/events/v1"
)

// How many events a stream that has replayed up to (nearly) the head may
// still take from the ring while it holds the topic's lock to subscribe.
const handoverMax = 1024

type server struct {
	pb.UnimplementedWatcherServer
	topics     map[string]*topic
	heartbeat  time.Duration
	buffer     int
	maxStreams int64
	draining   chan struct{}

	live   atomic.Int64
	nextID atomic.Uint64
}

// watch is one stream: the guide's "one goroutine per stream" is the
// goroutine grpc-go runs the handler in.
type watch struct {
	srv    *server
	t      *topic
	stream pb.Watcher_WatchServer
	f      *filter
	disc   bool
	next   uint64 // the next seq to look at
	pos    uint64 // the newest seq delivered or scanned: the stream's cursor
	sent   uint64
	tail   []*event
}

func (s *server) Watch(req *pb.WatchRequest, stream pb.Watcher_WatchServer) error {
	if req.Topic == "" {
		return status.Error(codes.InvalidArgument, "topic is required")
	}
	t := s.topics[req.Topic]
	if t == nil {
		return status.Errorf(codes.NotFound, "unknown topic '%.128s'", req.Topic)
	}
	f, why := newFilter(req.Kinds, req.Keys)
	if why != "" {
		return status.Errorf(codes.InvalidArgument, "invalid filter: %s", why)
	}
	if req.Snapshot {
		return status.Error(codes.Unimplemented, "snapshot is not supported by this server")
	}
	w := &watch{srv: s, t: t, stream: stream, f: f}
	switch req.Overflow {
	case pb.OverflowPolicy_OVERFLOW_DEFAULT, pb.OverflowPolicy_OVERFLOW_DROP:
	case pb.OverflowPolicy_OVERFLOW_DISCONNECT:
		w.disc = true
	case pb.OverflowPolicy_OVERFLOW_CONFLATE:
		return status.Error(codes.Unimplemented, "OVERFLOW_CONFLATE is not supported by this server")
	default:
		return status.Errorf(codes.InvalidArgument, "unknown overflow policy %d", req.Overflow)
	}
	if n := s.live.Add(1); n > s.maxStreams {
		s.live.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "too many streams (limit %d)", s.maxStreams)
	}
	defer s.live.Add(-1)

	var startGap *pb.WatchEvent
	if err := w.position(req, &startGap); err != nil {
		return err
	}
	id := s.nextID.Add(1)
	peerAddr := "unknown"
	if p, ok := peer.FromContext(stream.Context()); ok {
		peerAddr = p.Addr.String()
	}
	logInfo("msg=stream_opened id=%d topic=%s peer=%s cursor=%s streams_live=%d",
		id, t.name, peerAddr, t.cursor(w.pos), s.live.Load())
	err := w.run(startGap)
	reason := "ok"
	if err != nil {
		reason = status.Code(err).String()
	}
	logInfo("msg=stream_closed id=%d reason=%s sent=%d cursor=%s streams_live=%d",
		id, reason, w.sent, t.cursor(w.pos), s.live.Load()-1)
	return err
}

// position sets w.next/w.pos from the request, or returns the status to end
// the stream with.
func (w *watch) position(req *pb.WatchRequest, startGap **pb.WatchEvent) error {
	t := w.t
	if req.Cursor != "" {
		epoch, seq, ok := parseCursor(req.Cursor)
		if !ok {
			return status.Errorf(codes.InvalidArgument, "malformed cursor '%.64s'", req.Cursor)
		}
		h := t.head.Load()
		first := t.firstRetained(h)
		var why string
		var missed uint64
		switch {
		case epoch != t.epoch:
			why = "is from another epoch of the topic's log (the server restarted)"
		case seq > h:
			why = "is ahead of the topic's log"
		case seq+1 < first:
			why = "is older than what the topic retains"
			missed = first - (seq + 1)
		default:
			w.next, w.pos = seq+1, seq
			return nil
		}
		earliest := t.cursor(first - 1)
		if req.AllowGap && (epoch != t.epoch || seq <= h) {
			w.next, w.pos = first, first-1
			*startGap = &pb.WatchEvent{
				Payload: &pb.WatchEvent_Gap{Gap: &pb.Gap{
					Missed: missed, Reason: pb.GapReason_GAP_RETENTION, FromCursor: req.Cursor}},
				Cursor: earliest,
			}
			return nil
		}
		w.stream.SetTrailer(metadata.Pairs("tickfan-earliest-cursor", earliest))
		return status.Errorf(codes.OutOfRange, "cursor %s of topic '%s' %s; earliest available cursor is %s",
			req.Cursor, t.name, why, earliest)
	}
	switch req.Start {
	case pb.StartPosition_START_EARLIEST:
		w.next = t.firstRetained(t.head.Load())
	case pb.StartPosition_START_LIVE:
		w.next = t.head.Load() + 1
	case pb.StartPosition_START_AT_TIME:
		if req.StartUnixMicros <= 0 {
			return status.Error(codes.InvalidArgument, "start=START_AT_TIME needs start_unix_micros > 0")
		}
		w.next = t.seekTime(req.StartUnixMicros)
	default:
		return status.Errorf(codes.InvalidArgument, "unknown start position %d", req.Start)
	}
	w.pos = w.next - 1
	return nil
}

func (w *watch) sendEvent(ev *event) error {
	if err := w.stream.SendMsg(ev); err != nil {
		return err
	}
	w.pos = ev.seq
	w.sent++
	return nil
}

func (w *watch) sendControl(m *pb.WatchEvent, seq uint64) error {
	if err := w.stream.Send(m); err != nil {
		return err
	}
	w.pos = seq
	w.sent++
	return nil
}

func (w *watch) slowGap(missed, fromSeq, lastSeq uint64) error {
	return w.sendControl(&pb.WatchEvent{
		Payload: &pb.WatchEvent_Gap{Gap: &pb.Gap{
			Missed: missed, Reason: pb.GapReason_GAP_SLOW_CONSUMER, FromCursor: w.t.cursor(fromSeq)}},
		Cursor: w.t.cursor(lastSeq),
	}, lastSeq)
}

// withCursor ends the stream with code and the cursor to resume from.
func (w *watch) withCursor(code codes.Code, msg string) error {
	c := w.t.cursor(w.pos)
	w.stream.SetTrailer(metadata.Pairs("tickfan-cursor", c))
	return status.Errorf(code, "%s; resume from cursor %s", msg, c)
}

func (w *watch) drainingErr() error {
	return w.withCursor(codes.Unavailable, "server draining")
}

// checkEnd is the replay loop's cheap look at cancellation and drain.
func (w *watch) checkEnd() error {
	select {
	case <-w.stream.Context().Done():
		return status.FromContextError(w.stream.Context().Err()).Err()
	case <-w.srv.draining:
		return w.drainingErr()
	default:
		return nil
	}
}

// replayed sends the retained events from w.next through h (filtered);
// events that left the ring meanwhile become a Gap (or end the stream under
// OVERFLOW_DISCONNECT).
func (w *watch) replay(h uint64) error {
	t := w.t
	for n := 0; w.next <= h; n++ {
		if n&255 == 255 {
			if err := w.checkEnd(); err != nil {
				return err
			}
		}
		ev := t.get(w.next)
		if ev == nil {
			// Overtaken by the ring: this reader was slower than the feed.
			first := t.firstRetained(t.head.Load())
			if first <= w.next {
				first = w.next + 1 // the slot is being rewritten right now
			}
			if w.disc {
				return w.withCursor(codes.ResourceExhausted, "slow consumer: replay overtaken by retention")
			}
			if err := w.slowGap(first-w.next, w.next-1, first-1); err != nil {
				return err
			}
			w.next = first
			continue
		}
		w.next++
		if ev.gap || w.f.match(ev.kind, ev.key) {
			if err := w.sendEvent(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *watch) run(startGap *pb.WatchEvent) error {
	t, srv := w.t, w.srv
	if startGap != nil {
		if err := w.sendControl(startGap, w.pos); err != nil {
			return err
		}
	}

	// 1. Backlog replay from the ring, without holding anything.
	sub := &subscriber{ch: make(chan item, srv.buffer), f: w.f, disconnect: w.disc, kicked: make(chan struct{})}
	var eob uint64
	for {
		if err := w.replay(t.head.Load()); err != nil {
			return err
		}
		// 2. Subscribe at the head: under the publisher's lock, take the few
		// events appended since the replay looked, so the live channel
		// starts exactly after them: nothing lost, nothing twice.
		t.mu.Lock()
		h := t.head.Load()
		if h+1-w.next <= handoverMax {
			w.tail = w.tail[:0]
			for seq := w.next; seq <= h; seq++ {
				w.tail = append(w.tail, t.get(seq)) // nil if already evicted (tiny ring)
			}
			t.subscribeLocked(sub)
			t.mu.Unlock()
			eob = h
			break
		}
		t.mu.Unlock()
	}
	defer t.unsubscribe(sub)
	for i, ev := range w.tail {
		w.tail[i] = nil
		if ev == nil {
			continue
		}
		w.next = ev.seq + 1
		if ev.gap || w.f.match(ev.kind, ev.key) {
			if err := w.sendEvent(ev); err != nil {
				return err
			}
		}
	}
	w.tail = nil
	w.next = eob + 1
	if err := w.sendControl(&pb.WatchEvent{
		Payload: &pb.WatchEvent_EndOfBacklog{EndOfBacklog: &pb.EndOfBacklog{}},
		Cursor:  t.cursor(eob),
	}, eob); err != nil {
		return err
	}

	// 3. Live: the guide's select loop over the subscription, a heartbeat
	// timer, cancellation, and the server's drain.
	ctx := w.stream.Context()
	hb := time.NewTimer(srv.heartbeat)
	defer hb.Stop()
	lastSend := time.Now()
	for {
		select {
		case it := <-sub.ch:
			if err := w.deliver(it); err != nil {
				return err
			}
			// Take what is already queued before looking at timers again.
		drain:
			for i := 0; i < 256; i++ {
				select {
				case it = <-sub.ch:
					if err := w.deliver(it); err != nil {
						return err
					}
				default:
					break drain
				}
			}
			lastSend = time.Now()
		case now := <-hb.C:
			if idle := now.Sub(lastSend); idle < srv.heartbeat {
				hb.Reset(srv.heartbeat - idle)
				continue
			}
			// Idle: a heartbeat with the newest position scanned. Looked at
			// under the publisher's lock (once per heartbeat, not per event):
			// with nothing queued for us, every event up to the head was
			// delivered, filtered out, or dropped; drops not yet reported
			// (the publisher reports them with its next match) are reported
			// now, so the cursor can move to the head.
			t.mu.Lock()
			h := t.head.Load()
			queued, kicked := len(sub.ch) > 0, sub.dead
			var rep *dropReport
			if !queued && !kicked && sub.dropped > 0 {
				rep = &dropReport{missed: sub.dropped, fromSeq: sub.dropFrom, lastSeq: sub.dropLast}
				sub.dropped = 0
			}
			t.mu.Unlock()
			hb.Reset(srv.heartbeat)
			if queued || kicked {
				continue // the select takes them
			}
			if rep != nil {
				if err := w.slowGap(rep.missed, rep.fromSeq, rep.lastSeq); err != nil {
					return err
				}
			}
			cur := w.pos
			if h > cur {
				cur = h
			}
			if err := w.sendControl(&pb.WatchEvent{
				Payload: &pb.WatchEvent_Heartbeat{Heartbeat: &pb.Heartbeat{ServerUnixMicros: nowMicros()}},
				Cursor:  t.cursor(cur),
			}, cur); err != nil {
				return err
			}
			lastSend = time.Now()
		case <-sub.kicked:
			return w.withCursor(codes.ResourceExhausted, "slow consumer: over its buffer of "+
				fmt.Sprint(srv.buffer)+" events (OVERFLOW_DISCONNECT)")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-srv.draining:
			return w.drainingErr()
		}
	}
}

func (w *watch) deliver(it item) error {
	if d := it.drop; d != nil {
		return w.slowGap(d.missed, d.fromSeq, d.lastSeq)
	}
	if it.ev.seq <= w.pos {
		return nil // already covered (cannot happen: defensive)
	}
	return w.sendEvent(it.ev)
}

var _ grpc.ServerStream = pb.Watcher_WatchServer(nil)
