package main

import "strconv"

// A cursor names a position in a topic: the topic's epoch (random, new at
// every start of this in-memory server) and the sequence number of the last
// event the holder has seen (0 = before the first). Text form, the same as
// tickfand's: "1-<epoch: 16 lowercase hex>-<seq: decimal>".

const cursorTextMax = 2 + 16 + 1 + 20

func appendCursor(b []byte, epoch, seq uint64) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '1', '-')
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hex[(epoch>>uint(shift))&0xf])
	}
	b = append(b, '-')
	return strconv.AppendUint(b, seq, 10)
}

func formatCursor(epoch, seq uint64) string {
	var buf [cursorTextMax]byte
	return string(appendCursor(buf[:0], epoch, seq))
}

// parseCursor accepts exactly the canonical text form.
func parseCursor(s string) (epoch, seq uint64, ok bool) {
	if len(s) < 2+16+1+1 || len(s) > cursorTextMax || s[0] != '1' || s[1] != '-' || s[18] != '-' {
		return 0, 0, false
	}
	for i := 2; i < 18; i++ {
		c := s[i]
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		default:
			return 0, 0, false
		}
		epoch = epoch<<4 | uint64(v)
	}
	digits := s[19:]
	if len(digits) > 1 && digits[0] == '0' {
		return 0, 0, false // one canonical form per cursor
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, 0, false
		}
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return epoch, seq, true
}
