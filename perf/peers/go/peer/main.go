// tickfan-go-peer: the server of the streaming design guide, in Go, serving
// the tickfan Watch contract (proto/events/v1/watcher.proto) from an
// in-memory ring per topic, fed by the same feeds as tickfand. A peer for
// performance comparisons; see ../README.md.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	pb "tickfan/gen/events/v1"
)

const version = "0.1.0"

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func usageError(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tickfan-go-peer: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	fs := flag.NewFlagSet("tickfan-go-peer", flag.ExitOnError)
	listen := fs.String("listen", "0.0.0.0:50051", "gRPC address HOST:PORT (port 0: any free port)")
	var topicNames, feeds listFlag
	fs.Var(&topicNames, "topic", "declare a topic (repeatable; comma-separated lists too)")
	fs.Var(&feeds, "feed", "sim, sim:TOPIC, udp://ADDR:PORT[?iface=IP], tcp-listen://ADDR:PORT, tcp://HOST:PORT or none (repeatable; default sim)")
	heartbeatMs := fs.Int("heartbeat-ms", 5000, "heartbeat on a stream idle this long (10..300000)")
	buffer := fs.Int("buffer", 1024, "per-subscriber channel size, events; a full channel drops (Gap GAP_SLOW_CONSUMER)")
	ringSize := fs.Uint64("ring", 1000000, "events retained per topic (in memory)")
	maxStreams := fs.Int64("max-streams", 100000, "streams at once; more get RESOURCE_EXHAUSTED")
	simRate := fs.Int("sim-rate", 200, "simulator ticks per second (all symbols)")
	simSymbols := fs.String("sim-symbols", "AAPL,MSFT,GOOG,AMZN,NVDA,TSLA,META,JPM", "simulator symbols")
	simSeed := fs.Uint64("sim-seed", 1, "simulator seed")
	udpRcvbuf := fs.Int("udp-rcvbuf", 8<<20, "SO_RCVBUF of UDP feed sockets, bytes")
	drainMs := fs.Int("drain-timeout-ms", 5000, "on SIGTERM, how long streams get to receive their final status")
	statsMs := fs.Int("stats-interval-ms", 0, "log topic and feed counters this often (0: only at exit)")
	logLevelName := fs.String("log-level", "info", "error, warn, info or debug")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		usageError("unexpected argument '%s'", fs.Arg(0))
	}
	if *showVersion {
		fmt.Println("tickfan-go-peer", version)
		return
	}
	lvl, ok := parseLevel(*logLevelName)
	if !ok {
		usageError("--log-level '%s': expected error, warn, info or debug", *logLevelName)
	}
	logMax = lvl
	if *heartbeatMs < 10 || *heartbeatMs > 300000 {
		usageError("--heartbeat-ms '%d': expected 10..300000", *heartbeatMs)
	}
	if *buffer < 1 || *buffer > 1<<24 {
		usageError("--buffer '%d': expected 1..16777216", *buffer)
	}
	if *ringSize < 16 || *ringSize > 1<<32 {
		usageError("--ring '%d': expected 16..4294967296", *ringSize)
	}
	if *maxStreams < 1 {
		usageError("--max-streams '%d': expected >= 1", *maxStreams)
	}
	if *drainMs < 0 {
		usageError("--drain-timeout-ms '%d': expected >= 0", *drainMs)
	}
	for _, sym := range strings.Split(*simSymbols, ",") {
		if len(sym) == 0 || len(sym) > 16 || !topicNameValid([]byte(sym)) {
			usageError("--sim-symbols '%s': expected comma-separated symbols of 1-16 [A-Za-z0-9._-]", *simSymbols)
		}
	}

	// Topics: declared ones, plus the simulator's.
	type feedSpec struct{ spec, kind, arg string }
	var specs []feedSpec
	// No --feed: the simulator, as tickfand. An explicit --sim-rate also
	// adds the simulator when no sim feed is listed.
	simRateSet := false
	fs.Visit(func(f *flag.Flag) { simRateSet = simRateSet || f.Name == "sim-rate" })
	if len(feeds) == 0 {
		feeds = listFlag{"sim"}
	} else if simRateSet && !strings.Contains(","+strings.Join(feeds, ",")+",", ",sim") {
		feeds = append(feeds, "sim")
	}
	var names []string
	for _, list := range topicNames {
		for _, n := range strings.Split(list, ",") {
			if !topicNameValid([]byte(n)) {
				usageError("--topic '%s': expected 1-128 characters of [A-Za-z0-9._-]", n)
			}
			names = append(names, n)
		}
	}
	for _, list := range feeds {
		for _, spec := range strings.Split(list, ",") {
			kind, arg, err := parseFeed(spec)
			if err != nil {
				usageError("%v", err)
			}
			if kind == "sim" {
				if *simRate < 1 || *simRate > 10000000 {
					usageError("--sim-rate '%d': expected 1..10000000", *simRate)
				}
				names = append(names, arg)
			}
			specs = append(specs, feedSpec{spec, kind, arg})
		}
	}
	topics := map[string]*topic{}
	var order []string
	for _, n := range names {
		if topics[n] == nil {
			var b [8]byte
			rand.Read(b[:])
			topics[n] = newTopic(n, *ringSize, binary.LittleEndian.Uint64(b[:]))
			order = append(order, n)
		}
	}

	// gRPC: the same transport settings as tickfand (keepalive pings reap dead
	// peers; clients may ping every 10 s; 1 MiB requests; 16 KiB metadata).
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		logError("msg=start_failed error=%q", err.Error())
		os.Exit(1)
	}
	srv := &server{
		topics:     topics,
		heartbeat:  time.Duration(*heartbeatMs) * time.Millisecond,
		buffer:     *buffer,
		maxStreams: *maxStreams,
		draining:   make(chan struct{}),
	}
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(1<<20),
		grpc.MaxHeaderListSize(16<<10),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	pb.RegisterWatcherServer(gs, srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)

	// Feeds.
	var sources []*feedSource
	var sims []*sim
	for _, f := range specs {
		switch f.kind {
		case "none":
		case "sim":
			s := newSim(topics[f.arg], *simRate, *simSymbols, *simSeed)
			sims = append(sims, s)
			go s.run()
			logInfo("msg=feed_started source=%q topic=%s rate=%d", f.spec, f.arg, *simRate)
		default:
			src := newSource(f.spec, topics)
			var addr string
			switch f.kind {
			case "udp":
				addr, err = startUDP(src, f.arg, feedOptions{udpRcvbuf: *udpRcvbuf})
			case "tcp-listen":
				addr, err = startTCPListen(src, f.arg)
			case "tcp":
				addr, err = startTCP(src, f.arg)
			}
			if err != nil {
				logError("msg=start_failed error=%q", err.Error())
				os.Exit(1)
			}
			sources = append(sources, src)
			logInfo("msg=feed_started source=%q addr=%s", f.spec, addr)
		}
	}

	host, _, _ := net.SplitHostPort(*listen)
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	logInfo("msg=listening addr=%s topics=%s heartbeat_ms=%d ring=%d buffer=%d server=tickfan-go-peer version=%s",
		net.JoinHostPort(host, port), strings.Join(order, ","), *heartbeatMs, *ringSize, *buffer, version)

	logStats := func() {
		for _, n := range order {
			t := topics[n]
			logInfo("msg=topic_stats topic=%s head_seq=%d appended=%d upstream_gaps=%d slow_drops=%d subscribers=%d",
				n, t.head.Load(), t.appended.Load(), t.gaps.Load(), t.slowDrops.Load(), t.subscriberCount())
		}
		for _, s := range sources {
			s.logStats()
		}
	}
	if *statsMs > 0 {
		go func() {
			for range time.Tick(time.Duration(*statsMs) * time.Millisecond) {
				logStats()
			}
		}()
	}

	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for {
		select {
		case err := <-served:
			logError("msg=serve_failed error=%q", fmt.Sprint(err))
			os.Exit(1)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				logInfo("msg=sighup_ignored")
				continue
			}
			shutdown(gs, hs, srv, sigs, sims, sources, time.Duration(*drainMs)*time.Millisecond)
			logStats()
			logInfo("msg=stopped")
			os.Exit(0)
		}
	}
}

// shutdown: stop the feeds, end every stream with UNAVAILABLE and the cursor
// to resume from, GracefulStop with a timeout, then Stop. A second signal
// exits at once.
func shutdown(gs *grpc.Server, hs *health.Server, srv *server, sigs chan os.Signal, sims []*sim,
	sources []*feedSource, timeout time.Duration) {
	logInfo("msg=draining streams_live=%d timeout_ms=%d", srv.live.Load(), timeout.Milliseconds())
	hs.Shutdown()
	for _, s := range sims {
		close(s.stop)
	}
	for _, s := range sources {
		if s.stop != nil {
			s.stop()
		}
	}
	close(srv.draining)
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		logWarn("msg=drain_timeout streams_live=%d", srv.live.Load())
		gs.Stop()
	case sig := <-sigs:
		logWarn("msg=exit_now signal=%s", sig)
		os.Exit(0)
	}
}
