package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// Logs are logfmt lines on stderr, in the same shape as tickfand's
// ("ts=... level=info msg=listening addr=..."), so harnesses parse both alike.

type logLevel int

const (
	levelError logLevel = iota
	levelWarn
	levelInfo
	levelDebug
)

var levelNames = [...]string{"error", "warn", "info", "debug"}

var (
	logMu       sync.Mutex
	logMax      = levelInfo
	logScratch  []byte
	logTimeForm = "2006-01-02T15:04:05.000000Z"
)

func parseLevel(s string) (logLevel, bool) {
	for i, n := range levelNames {
		if n == s {
			return logLevel(i), true
		}
	}
	return 0, false
}

func logf(level logLevel, format string, args ...interface{}) {
	if level > logMax {
		return
	}
	logMu.Lock()
	b := logScratch[:0]
	b = append(b, "ts="...)
	b = time.Now().UTC().AppendFormat(b, logTimeForm)
	b = append(b, " level="...)
	b = append(b, levelNames[level]...)
	b = append(b, ' ')
	b = fmt.Appendf(b, format, args...)
	b = append(b, '\n')
	os.Stderr.Write(b)
	logScratch = b
	logMu.Unlock()
}

func logError(format string, args ...interface{}) { logf(levelError, format, args...) }
func logWarn(format string, args ...interface{})  { logf(levelWarn, format, args...) }
func logInfo(format string, args ...interface{})  { logf(levelInfo, format, args...) }
func logDebug(format string, args ...interface{}) { logf(levelDebug, format, args...) }

// rateLimit lets a burst of lines through per interval and counts the rest.
type rateLimit struct {
	mu         sync.Mutex
	interval   time.Duration
	burst      int
	start      time.Time
	used       int
	suppressed uint64
}

func (r *rateLimit) allow() (ok bool, suppressed uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.start) >= r.interval {
		r.start, r.used = now, 0
	}
	if r.used < r.burst {
		r.used++
		s := r.suppressed
		r.suppressed = 0
		return true, s
	}
	r.suppressed++
	return false, 0
}
