package main

import (
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range [][2]uint64{{0, 0}, {0x5f3a9c0d12e4b7a1, 184467}, {^uint64(0), ^uint64(0)}} {
		s := formatCursor(c[0], c[1])
		e, q, ok := parseCursor(s)
		if !ok || e != c[0] || q != c[1] {
			t.Fatalf("%s -> %x %d %v", s, e, q, ok)
		}
	}
	tp := newTopic("x", 16, 0xabc)
	if got, want := tp.cursor(42), formatCursor(0xabc, 42); got != want {
		t.Fatalf("topic cursor %s, want %s", got, want)
	}
	for _, bad := range []string{"", "bogus", "2-0000000000000000-1", "1-000000000000000G-1",
		"1-0000000000000000-", "1-0000000000000000-01", "1-0000000000000000-1x",
		"1-0000000000000000-18446744073709551616", "1-ABCDEF0000000000-1"} {
		if _, _, ok := parseCursor(bad); ok {
			t.Fatalf("accepted %q", bad)
		}
	}
}

func TestFrameDecode(t *testing.T) {
	f := frame{channel: 3, sourceSeq: 9, sourceTimeUs: 12345, topic: []byte("ext"),
		kind: []byte("quote"), key: []byte("AAPL"), body: []byte("hello")}
	b := encodeFrame(nil, &f)
	var g frame
	n, e := decodeFrame(b, &g)
	if e != frameOK || n != len(b) || g.channel != 3 || g.sourceSeq != 9 || g.sourceTimeUs != 12345 ||
		string(g.topic) != "ext" || string(g.kind) != "quote" || string(g.key) != "AAPL" || string(g.body) != "hello" {
		t.Fatalf("decode: %v %d %+v", e, n, g)
	}
	for i := 0; i < len(b); i++ {
		if _, e := decodeFrame(b[:i], &g); e != frameNeedMore {
			t.Fatalf("prefix %d: %v", i, e)
		}
	}
	mut := func(i int, v byte) []byte { c := append([]byte(nil), b...); c[i] = v; return c }
	cases := []struct {
		b    []byte
		want frameErr
	}{
		{mut(0, 'X'), frameBadMagic}, {mut(2, 2), frameBadVersion}, {mut(3, 2), frameBadType},
		{mut(4, byte(len(b)+1)), frameBadLength}, {mut(32, 0), frameBadLength},
		{mut(40, ' '), frameBadTopic}, {mut(7, 0x10), frameOversize},
	}
	for i, c := range cases {
		if _, e := decodeFrame(c.b, &g); e != c.want {
			t.Fatalf("case %d: %v, want %v", i, e, c.want)
		}
	}
}

func drain(ch chan item) (out []item) {
	for {
		select {
		case it := <-ch:
			out = append(out, it)
		default:
			return
		}
	}
}

func TestPublishDropsAndReports(t *testing.T) {
	tp := newTopic("t", 64, 1)
	f, _ := newFilter(nil, []string{"A"})
	s := &subscriber{ch: make(chan item, 2), f: f, kicked: make(chan struct{})}
	tp.mu.Lock()
	tp.subscribeLocked(s)
	tp.mu.Unlock()
	key := func(i int) []byte {
		if i%2 == 0 {
			return []byte("A")
		}
		return []byte("B")
	}
	for i := 1; i <= 10; i++ { // A on even seqs: 2,4 fit; 6,8,10 dropped
		tp.appendData([]byte("k"), key(i), []byte("x"), 0)
	}
	got := drain(s.ch)
	if len(got) != 2 || got[0].ev.seq != 2 || got[1].ev.seq != 4 {
		t.Fatalf("queued %+v", got)
	}
	tp.appendData([]byte("k"), []byte("B"), nil, 0) // 11: not a match, nothing changes
	tp.appendData([]byte("k"), []byte("A"), nil, 0) // 12: the report, then 12
	got = drain(s.ch)
	if len(got) != 2 || got[0].drop == nil || got[1].ev == nil || got[1].ev.seq != 12 {
		t.Fatalf("after room: %+v", got)
	}
	if d := got[0].drop; d.missed != 3 || d.fromSeq != 5 || d.lastSeq != 10 {
		t.Fatalf("report %+v", d)
	}
	if tp.slowDrops.Load() != 3 {
		t.Fatalf("slowDrops %d", tp.slowDrops.Load())
	}
}

func TestPublishDisconnect(t *testing.T) {
	tp := newTopic("t", 64, 1)
	s := &subscriber{ch: make(chan item, 1), disconnect: true, kicked: make(chan struct{})}
	tp.mu.Lock()
	tp.subscribeLocked(s)
	tp.mu.Unlock()
	tp.appendData(nil, nil, nil, 0)
	tp.appendData(nil, nil, nil, 0)
	select {
	case <-s.kicked:
	default:
		t.Fatal("not kicked")
	}
	tp.appendData(nil, nil, nil, 0) // a dead subscriber is skipped
	tp.unsubscribe(s)
	if n := tp.subscriberCount(); n != 0 {
		t.Fatalf("%d subscribers", n)
	}
}

func TestRingRetentionAndSeekTime(t *testing.T) {
	tp := newTopic("t", 16, 1)
	for i := 0; i < 40; i++ {
		tp.appendData(nil, nil, nil, 0)
	}
	if first := tp.firstRetained(tp.head.Load()); first != 25 {
		t.Fatalf("first %d", first)
	}
	if tp.get(24) != nil || tp.get(25) == nil || tp.get(40) == nil {
		t.Fatal("ring contents")
	}
	if s := tp.seekTime(1); s != 25 {
		t.Fatalf("seekTime(past) = %d", s)
	}
	if s := tp.seekTime(nowMicros() + 1e9); s != 41 {
		t.Fatalf("seekTime(future) = %d", s)
	}
}
