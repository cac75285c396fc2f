package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Feed ingest: the same --feed sources as tickfand, parsed strictly per
// feed/FORMAT.md. Each UDP socket and each TCP connection runs in its own
// goroutine and appends to the topics directly (appends to one topic are
// serialised by the topic's lock).

type feedStats struct {
	frames, unknownTopic, gaps, missed, duplicates atomic.Uint64
	rejected                                       [nFrameErrs]atomic.Uint64
}

type feedSource struct {
	spec   string
	topics map[string]*topic
	stats  feedStats
	rl     rateLimit
	stop   func()
}

// channelState: per source (socket or connection), the source_seq expected
// next on each channel.
type channelState map[uint32]uint64

func newSource(spec string, topics map[string]*topic) *feedSource {
	return &feedSource{spec: spec, topics: topics, rl: rateLimit{interval: time.Second, burst: 10}}
}

func (s *feedSource) reject(e frameErr, offset uint64) {
	s.stats.rejected[e].Add(1)
	if ok, suppressed := s.rl.allow(); ok {
		logWarn("msg=feed_reject source=%q reason=%s offset=%d suppressed=%d", s.spec, e, offset, suppressed)
	}
}

func (s *feedSource) handle(f *frame, chans channelState) {
	t := s.topics[string(f.topic)]
	if t == nil {
		s.stats.unknownTopic.Add(1)
		if ok, suppressed := s.rl.allow(); ok {
			logWarn("msg=feed_unknown_topic source=%q topic=%s suppressed=%d", s.spec, f.topic, suppressed)
		}
		return
	}
	if f.sourceSeq != 0 {
		next := chans[f.channel]
		if next != 0 && f.sourceSeq != next {
			switch {
			case f.sourceSeq > next:
				missed := f.sourceSeq - next
				s.stats.gaps.Add(1)
				s.stats.missed.Add(missed)
				logWarn("msg=upstream_gap source=%q channel=%d topic=%s missed=%d expected=%d got=%d",
					s.spec, f.channel, t.name, missed, next, f.sourceSeq)
				t.appendUpstreamGap(missed)
			case f.sourceSeq == 1:
				logInfo("msg=feed_restarted source=%q channel=%d expected=%d", s.spec, f.channel, next)
			default:
				s.stats.duplicates.Add(1)
				return
			}
		}
		chans[f.channel] = f.sourceSeq + 1
	}
	t.appendData(f.kind, f.key, f.body, f.sourceTimeUs)
	s.stats.frames.Add(1)
}

// datagram handles one UDP datagram: whole frames back to back.
func (s *feedSource) datagram(b []byte, chans channelState, offset uint64) {
	var f frame
	for len(b) > 0 {
		n, e := decodeFrame(b, &f)
		switch e {
		case frameOK:
			s.handle(&f, chans)
		case frameBadTopic:
			s.reject(e, offset)
		case frameNeedMore:
			s.reject(frameTruncated, offset)
			return
		default:
			s.reject(e, offset) // the rest of the datagram cannot be framed
			return
		}
		b = b[n:]
	}
}

func (s *feedSource) logStats() {
	st := &s.stats
	var rej strings.Builder
	var total uint64
	for i := range st.rejected {
		if n := st.rejected[i].Load(); n > 0 {
			total += n
			fmt.Fprintf(&rej, " %s=%d", frameErr(i), n)
		}
	}
	logInfo("msg=feed_stats source=%q frames=%d rejected=%d unknown_topic=%d gaps=%d missed=%d duplicates=%d%s",
		s.spec, st.frames.Load(), total, st.unknownTopic.Load(), st.gaps.Load(), st.missed.Load(),
		st.duplicates.Load(), rej.String())
}

type feedOptions struct {
	udpRcvbuf int
}

// parseFeed checks a --feed spec; kind is sim, udp, tcp-listen, tcp or none.
func parseFeed(spec string) (kind, arg string, err error) {
	switch {
	case spec == "none":
		return "none", "", nil
	case spec == "sim":
		return "sim", "sim", nil
	case strings.HasPrefix(spec, "sim:"):
		name := spec[4:]
		if !topicNameValid([]byte(name)) {
			return "", "", fmt.Errorf("--feed '%s': invalid topic name", spec)
		}
		return "sim", name, nil
	}
	for _, k := range []string{"udp", "tcp-listen", "tcp"} {
		if rest := strings.TrimPrefix(spec, k+"://"); rest != spec {
			hostport := rest
			if i := strings.IndexByte(rest, '?'); i >= 0 {
				if k != "udp" {
					return "", "", fmt.Errorf("--feed '%s': options are only for udp://", spec)
				}
				hostport = rest[:i]
			}
			host, port, err := net.SplitHostPort(hostport)
			if err != nil || (k == "tcp" && host == "") {
				return "", "", fmt.Errorf("--feed '%s': expected HOST:PORT", spec)
			}
			if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 || (k == "tcp" && p == 0) {
				return "", "", fmt.Errorf("--feed '%s': bad port", spec)
			}
			return k, rest, nil
		}
	}
	return "", "", fmt.Errorf("--feed '%s': unknown feed (expected sim, sim:TOPIC, udp://ADDR:PORT, "+
		"tcp://HOST:PORT, tcp-listen://ADDR:PORT or none)", spec)
}

func reuseAddr(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// ---- UDP -----------------------------------------------------------------

type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

func startUDP(s *feedSource, arg string, o feedOptions) (string, error) {
	hostport, query := arg, ""
	if i := strings.IndexByte(arg, '?'); i >= 0 {
		hostport, query = arg[:i], arg[i+1:]
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("--feed '%s': bad options", s.spec)
	}
	iface := q.Get("iface")
	for k := range q {
		if k != "iface" {
			return "", fmt.Errorf("--feed '%s': unknown option '%s'", s.spec, k)
		}
	}
	lc := net.ListenConfig{Control: reuseAddr}
	pc, err := lc.ListenPacket(context.Background(), "udp", hostport)
	if err != nil {
		return "", fmt.Errorf("--feed '%s': %v", s.spec, err)
	}
	conn := pc.(*net.UDPConn)
	if o.udpRcvbuf > 0 {
		conn.SetReadBuffer(o.udpRcvbuf)
	}
	laddr := conn.LocalAddr().(*net.UDPAddr)
	host, _, _ := net.SplitHostPort(hostport)
	ip := net.ParseIP(host)
	var bc batchConn
	if ip == nil || ip.To4() != nil {
		p4 := ipv4.NewPacketConn(conn)
		bc = p4
		if ip != nil && ip.IsMulticast() {
			ifi, err := interfaceByIP(iface)
			if err == nil {
				err = p4.JoinGroup(ifi, &net.UDPAddr{IP: ip})
			}
			if err != nil {
				conn.Close()
				return "", fmt.Errorf("--feed '%s': join: %v", s.spec, err)
			}
		}
	} else {
		p6 := ipv6.NewPacketConn(conn)
		bc = p6
		if ip.IsMulticast() {
			ifi, err := interfaceByIP(iface)
			if err == nil {
				err = p6.JoinGroup(ifi, &net.UDPAddr{IP: ip})
			}
			if err != nil {
				conn.Close()
				return "", fmt.Errorf("--feed '%s': join: %v", s.spec, err)
			}
		}
	}
	s.stop = func() { conn.Close() }
	go udpLoop(s, conn, bc)
	return net.JoinHostPort(host, strconv.Itoa(laddr.Port)), nil
}

func interfaceByIP(iface string) (*net.Interface, error) {
	if iface == "" {
		return nil, nil
	}
	want := net.ParseIP(iface)
	if want == nil {
		return nil, fmt.Errorf("iface '%s' is not an IP address", iface)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		addrs, _ := ifs[i].Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(want) {
				return &ifs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("no interface has address %s", iface)
}

// udpLoop reads datagrams in batches (recvmmsg) of up to 32 per system call.
func udpLoop(s *feedSource, conn *net.UDPConn, bc batchConn) {
	const batch, dgramMax = 32, 64 << 10
	ms := make([]ipv4.Message, batch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, dgramMax)}
	}
	chans := channelState{}
	var datagrams uint64
	for {
		n, err := bc.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			logWarn("msg=feed_error source=%q error=%q", s.spec, err.Error())
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for i := 0; i < n; i++ {
			s.datagram(ms[i].Buffers[0][:ms[i].N], chans, datagrams)
			datagrams++
		}
	}
}

// ---- TCP -----------------------------------------------------------------

func startTCPListen(s *feedSource, arg string) (string, error) {
	lc := net.ListenConfig{Control: reuseAddr}
	ln, err := lc.Listen(context.Background(), "tcp", arg)
	if err != nil {
		return "", fmt.Errorf("--feed '%s': %v", s.spec, err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	closed := false
	s.stop = func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				logWarn("msg=feed_error source=%q error=%q", s.spec, err.Error())
				time.Sleep(50 * time.Millisecond)
				continue
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			go func() {
				logInfo("msg=feed_connected source=%q peer=%s", s.spec, c.RemoteAddr())
				streamLoop(s, c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
		}
	}()
	host, _, _ := net.SplitHostPort(arg)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return net.JoinHostPort(host, port), nil
}

// startTCP connects to a sender and reconnects with backoff (100 ms .. 5 s).
func startTCP(s *feedSource, arg string) (string, error) {
	stop := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var cur net.Conn
	s.stop = func() {
		once.Do(func() { close(stop) })
		mu.Lock()
		if cur != nil {
			cur.Close()
		}
		mu.Unlock()
	}
	go func() {
		backoff := 100 * time.Millisecond
		for {
			c, err := net.DialTimeout("tcp", arg, 5*time.Second)
			if err == nil {
				mu.Lock()
				cur = c
				mu.Unlock()
				logInfo("msg=feed_connected source=%q peer=%s", s.spec, c.RemoteAddr())
				start := time.Now()
				streamLoop(s, c)
				c.Close()
				if time.Since(start) > 10*time.Second {
					backoff = 100 * time.Millisecond
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(backoff):
			}
			if backoff *= 2; backoff > 5*time.Second {
				backoff = 5 * time.Second
			}
		}
	}()
	return arg, nil
}

// streamLoop frames one TCP connection until it ends or cannot be framed.
func streamLoop(s *feedSource, c net.Conn) {
	buf := make([]byte, 0, 256<<10)
	chans := channelState{}
	var offset uint64
	var f frame
	for {
		off := 0
		for off < len(buf) {
			n, e := decodeFrame(buf[off:], &f)
			if e == frameNeedMore {
				break
			}
			if e == frameOK {
				s.handle(&f, chans)
			} else {
				s.reject(e, offset+uint64(off))
				if e != frameBadTopic {
					return // a bad header: the stream can no longer be framed
				}
			}
			off += n
		}
		rest := copy(buf, buf[off:])
		buf = buf[:rest]
		offset += uint64(off)
		if len(buf) >= frameHdr { // make room for the whole frame
			need := int(uint32(buf[4]) | uint32(buf[5])<<8 | uint32(buf[6])<<16 | uint32(buf[7])<<24)
			if need > cap(buf) {
				grown := make([]byte, len(buf), need)
				copy(grown, buf)
				buf = grown
			}
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			if len(buf) > 0 {
				s.reject(frameTruncated, offset)
			}
			if err != io.EOF && !errors.Is(err, net.ErrClosed) {
				logWarn("msg=feed_error source=%q error=%q", s.spec, err.Error())
			}
			logInfo("msg=feed_disconnected source=%q", s.spec)
			return
		}
	}
}
