package main

import (
	"fmt"

	protov1 "github.com/golang/protobuf/proto"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
)

// Encode once, send many times. Every Data event is marshalled into a
// WatchEvent exactly once, when it is appended to its topic; all the streams
// that deliver it send those same bytes. This codec replaces grpc-go's
// default "proto" codec: a *event is passed through as its pre-encoded bytes,
// anything else (requests, heartbeats, Gap, EndOfBacklog, health messages)
// is marshalled as usual.
//
// grpc.PreparedMsg (grpc-go 1.33) was not used: it is prepared per stream
// (Encode needs a stream's context) and the transport copies header and
// payload into a fresh frame buffer on every send anyway, so the only thing
// it would save over this codec is a 5-byte header allocation per send.
type fanoutCodec struct{}

func (fanoutCodec) Name() string { return "proto" }

func (fanoutCodec) Marshal(v interface{}) ([]byte, error) {
	switch m := v.(type) {
	case *event:
		return m.enc, nil
	case proto.Message: // the generated contract (protobuf-go APIv2)
		return proto.Marshal(m)
	case protov1.Message: // grpc-go's own services (health), APIv1
		return protov1.Marshal(m)
	default:
		return nil, fmt.Errorf("codec: cannot marshal %T", v)
	}
}

func (fanoutCodec) Unmarshal(data []byte, v interface{}) error {
	switch m := v.(type) {
	case proto.Message:
		return proto.Unmarshal(data, m)
	case protov1.Message:
		return protov1.Unmarshal(data, m)
	default:
		return fmt.Errorf("codec: cannot unmarshal into %T", v)
	}
}

func init() { encoding.RegisterCodec(fanoutCodec{}) }
