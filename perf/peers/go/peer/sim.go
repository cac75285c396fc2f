package main

import (
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	mk "tickfan/gen/market/v1"
)

// The built-in simulator: quote and trade ticks (one in five a trade) over a
// few symbols, kind "quote"/"trade", key = symbol, body = an encoded
// tickfan.market.v1.Tick (about 40-60 bytes), with random-walk prices.
// Deterministic for a given --sim-seed, like tickfand's.

type sim struct {
	t       *topic
	rate    int
	symbols [][]byte
	names   []string
	mid     []int64
	rng     uint64
	stop    chan struct{}

	tick  mk.Tick
	quote mk.Quote
	trade mk.Trade
	tq    mk.Tick_Quote
	tt    mk.Tick_Trade
	body  []byte
}

func newSim(t *topic, rate int, symbols string, seed uint64) *sim {
	s := &sim{t: t, rate: rate, rng: seed, stop: make(chan struct{})}
	for _, sym := range strings.Split(symbols, ",") {
		s.symbols = append(s.symbols, []byte(sym))
		s.names = append(s.names, sym)
		s.mid = append(s.mid, 200000+int64(s.next()%5000000)) // 20.0000 .. 520.0000
	}
	s.tq.Quote, s.tt.Trade = &s.quote, &s.trade
	s.tick.Venue = "SIMX"
	s.tick.PriceExponent = -4
	return s
}

// next: splitmix64.
func (s *sim) next() uint64 {
	s.rng += 0x9e3779b97f4a7c15
	z := s.rng
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

var (
	kindQuote = []byte("quote")
	kindTrade = []byte("trade")
)

func (s *sim) emit(now time.Time) {
	r := s.next()
	n := uint64(len(s.symbols))
	i := r % n
	r /= n
	s.mid[i] += int64(r%11) - 5
	r /= 11
	if s.mid[i] < 10000 {
		s.mid[i] = 10000
	}
	half := 1 + int64(r%3)
	r /= 3
	trade := r%5 == 0
	r /= 5
	s.tick.Symbol = s.names[i]
	s.tick.ExchangeTimeUnixNanos = now.UnixNano()
	kind := kindQuote
	if trade {
		buy := r&1 == 1
		s.trade.Price = s.mid[i] - half
		s.trade.AggressorSide = mk.Side_SIDE_SELL
		if buy {
			s.trade.Price = s.mid[i] + half
			s.trade.AggressorSide = mk.Side_SIDE_BUY
		}
		s.trade.Size = 100 * int64(1+(r>>1)%10)
		s.tick.Body = &s.tt
		kind = kindTrade
	} else {
		s.quote.BidPrice = s.mid[i] - half
		s.quote.AskPrice = s.mid[i] + half
		s.quote.BidSize = 100 * int64(1+r%10)
		s.quote.AskSize = 100 * int64(1+(r/10)%10)
		s.tick.Body = &s.tq
	}
	b, err := proto.MarshalOptions{}.MarshalAppend(s.body[:0], &s.tick)
	if err != nil {
		panic(err)
	}
	s.body = b
	s.t.appendData(kind, s.symbols[i], b, now.UnixMicro())
}

// run paces the ticks: every interval it emits what is due since the start,
// at most a tenth of a second's worth at once (a stalled simulator does not
// burst).
func (s *sim) run() {
	interval := time.Second / time.Duration(s.rate)
	if interval < time.Millisecond {
		interval = time.Millisecond
	}
	if interval > 50*time.Millisecond {
		interval = 50 * time.Millisecond
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	start := time.Now()
	var emitted int64
	maxBurst := int64(s.rate/10 + 1)
	for {
		select {
		case <-s.stop:
			return
		case now := <-tk.C:
			due := int64(now.Sub(start).Seconds()*float64(s.rate)) - emitted
			if due > maxBurst {
				emitted += due - maxBurst // skipped, not queued
				due = maxBurst
			}
			for ; due > 0; due-- {
				s.emit(now)
				emitted++
			}
		}
	}
}
