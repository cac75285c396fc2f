package main

import "encoding/binary"

// Feed frames, version 1 (feed/FORMAT.md): a 40-byte little-endian header,
// then topic, kind, key and body.

const (
	frameHdr     = 40
	frameMax     = 1 << 20
	topicNameMax = 128
)

type frameErr int

const (
	frameOK frameErr = iota
	frameNeedMore
	frameTruncated
	frameBadMagic
	frameBadVersion
	frameBadType
	frameBadLength
	frameOversize
	frameBadTopic
	nFrameErrs
)

var frameErrNames = [nFrameErrs]string{"ok", "need_more", "truncated", "bad_magic", "bad_version",
	"bad_type", "bad_length", "oversize", "bad_topic"}

func (e frameErr) String() string { return frameErrNames[e] }

type frame struct {
	channel      uint32
	sourceSeq    uint64
	sourceTimeUs int64
	topic        []byte
	kind, key    []byte
	body         []byte
}

func topicNameValid(b []byte) bool {
	if len(b) == 0 || len(b) > topicNameMax {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// decodeFrame decodes the frame at the start of b. n is the frame's length
// whenever the header was valid (so a bad_topic frame can be skipped);
// frameNeedMore means b holds a valid beginning of a frame, not all of it.
func decodeFrame(b []byte, f *frame) (n int, e frameErr) {
	if len(b) >= 1 && b[0] != 0x54 || len(b) >= 2 && b[1] != 0x46 {
		return 0, frameBadMagic
	}
	if len(b) >= 3 && b[2] != 1 {
		return 0, frameBadVersion
	}
	if len(b) >= 4 && b[3] != 1 {
		return 0, frameBadType
	}
	if len(b) < frameHdr {
		return 0, frameNeedMore
	}
	length := uint64(binary.LittleEndian.Uint32(b[4:]))
	topicLen, kindLen := uint64(b[32]), uint64(b[33])
	keyLen := uint64(binary.LittleEndian.Uint16(b[34:]))
	bodyLen := uint64(binary.LittleEndian.Uint32(b[36:]))
	if length > frameMax {
		return 0, frameOversize
	}
	if keyLen > 255 || topicLen == 0 || topicLen > topicNameMax ||
		frameHdr+topicLen+kindLen+keyLen+bodyLen != length {
		return 0, frameBadLength
	}
	if uint64(len(b)) < length {
		return 0, frameNeedMore
	}
	f.channel = binary.LittleEndian.Uint32(b[8:])
	f.sourceSeq = binary.LittleEndian.Uint64(b[16:])
	f.sourceTimeUs = int64(binary.LittleEndian.Uint64(b[24:]))
	p := uint64(frameHdr)
	f.topic = b[p : p+topicLen]
	p += topicLen
	f.kind = b[p : p+kindLen]
	p += kindLen
	f.key = b[p : p+keyLen]
	p += keyLen
	f.body = b[p:length]
	if !topicNameValid(f.topic) {
		return int(length), frameBadTopic
	}
	return int(length), frameOK
}

// encodeFrame appends a frame (used by the tests).
func encodeFrame(b []byte, f *frame) []byte {
	n := frameHdr + len(f.topic) + len(f.kind) + len(f.key) + len(f.body)
	var h [frameHdr]byte
	h[0], h[1], h[2], h[3] = 0x54, 0x46, 1, 1
	binary.LittleEndian.PutUint32(h[4:], uint32(n))
	binary.LittleEndian.PutUint32(h[8:], f.channel)
	binary.LittleEndian.PutUint64(h[16:], f.sourceSeq)
	binary.LittleEndian.PutUint64(h[24:], uint64(f.sourceTimeUs))
	h[32], h[33] = byte(len(f.topic)), byte(len(f.kind))
	binary.LittleEndian.PutUint16(h[34:], uint16(len(f.key)))
	binary.LittleEndian.PutUint32(h[36:], uint32(len(f.body)))
	b = append(b, h[:]...)
	b = append(b, f.topic...)
	b = append(b, f.kind...)
	b = append(b, f.key...)
	return append(b, f.body...)
}
