package ledger

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/toolgate/toolgate/money"
)

// The stored form of a record (the value of l/r/ and, byte for byte, of
// its l/p/ index entry) is a compact binary encoding, not JSON: reading a
// record back costs no JSON parsing, and a record plus its index copy take
// about as many bytes as the JSON alone did. The JSON form (AppendJSON),
// which the hash covers, is re-derived from it exactly.
//
//	0x01                                  format version
//	str type, str outcome, str tool       first, so index filters stop here
//	uvarint seq
//	int64 BE at (Unix nanoseconds)
//	str request_id, principal, tier, rate_class, reason
//	varint status, varint cost_micros
//	str spend_day
//	varint latency_us, varint upstream_status, varint upstream_latency_us
//	byte 0|1 payment; if 1: varint version, str scheme, str network,
//	    str payer, varint amount_micros, str nonce
//	str kind, varint amount_micros
//	byte 0|1 balance_after; if 1: varint balance_after_micros
//	str payer, str network, str tx_hash
//	version 2 and later: str actor, str state
//	version 3 and later: str protocol
//	version 4 and later: str jti, str client_id
//	version 5: str node
//	32 bytes prev, 32 bytes hash
//
// Version 2 is written exactly when actor or state is set (admin records,
// attributed top-ups), version 1 otherwise, so records written before
// version 2 existed keep their stored bytes.
// str is a uvarint length and that many bytes of valid UTF-8. The
// encoding is canonical: decoding rejects anything appendBinary would not
// have written (trailing bytes, over-long varints, flags other than 0 or
// 1), so each record has exactly one stored byte string.
const (
	binaryVersion  = 1
	binaryVersion2 = 2 // + actor, state
	binaryVersion3 = 3 // + actor, state, protocol
	binaryVersion4 = 4 // + actor, state, protocol, jti, client_id
	binaryVersion5 = 5 // + actor, state, protocol, jti, client_id, node
)

var errBinary = errors.New("malformed stored record")

// appendBinary appends the stored form of r; prev and hash are the binary
// hashes behind r.Prev and r.Hash.
func (r *Record) appendBinary(b []byte, prev, hash *[32]byte) []byte {
	v5 := r.Node != ""
	v4 := v5 || r.TokenID != "" || r.ClientID != ""
	v3 := v4 || r.Protocol != ""
	v2 := v3 || r.Actor != "" || len(r.State) > 0
	switch {
	case v5:
		b = append(b, binaryVersion5)
	case v4:
		b = append(b, binaryVersion4)
	case v3:
		b = append(b, binaryVersion3)
	case v2:
		b = append(b, binaryVersion2)
	default:
		b = append(b, binaryVersion)
	}
	b = appendBStr(b, r.Type)
	b = appendBStr(b, r.Outcome)
	b = appendBStr(b, r.Tool)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.At.UnixNano()))
	b = appendBStr(b, r.RequestID)
	b = appendBStr(b, r.Principal)
	b = appendBStr(b, r.Tier)
	b = appendBStr(b, r.RateClass)
	b = appendBStr(b, r.Reason)
	b = binary.AppendVarint(b, int64(r.Status))
	b = binary.AppendVarint(b, int64(r.Cost))
	b = appendBStr(b, r.SpendDay)
	b = binary.AppendVarint(b, r.LatencyUS)
	b = binary.AppendVarint(b, int64(r.UpstreamStatus))
	b = binary.AppendVarint(b, r.UpstreamLatencyUS)
	if p := r.Payment; p != nil {
		b = append(b, 1)
		b = binary.AppendVarint(b, int64(p.Version))
		b = appendBStr(b, p.Scheme)
		b = appendBStr(b, p.Network)
		b = appendBStr(b, p.Payer)
		b = binary.AppendVarint(b, int64(p.Amount))
		b = appendBStr(b, p.Nonce)
	} else {
		b = append(b, 0)
	}
	b = appendBStr(b, r.Kind)
	b = binary.AppendVarint(b, int64(r.Amount))
	if r.BalanceAfter != nil {
		b = append(b, 1)
		b = binary.AppendVarint(b, int64(*r.BalanceAfter))
	} else {
		b = append(b, 0)
	}
	b = appendBStr(b, r.Payer)
	b = appendBStr(b, r.Network)
	b = appendBStr(b, r.TxHash)
	if v2 {
		b = appendBStr(b, r.Actor)
		b = binary.AppendUvarint(b, uint64(len(r.State)))
		b = append(b, r.State...)
	}
	if v3 {
		b = appendBStr(b, r.Protocol)
	}
	if v4 {
		b = appendBStr(b, r.TokenID)
		b = appendBStr(b, r.ClientID)
	}
	if v5 {
		b = appendBStr(b, r.Node)
	}
	b = append(b, prev[:]...)
	return append(b, hash[:]...)
}

func appendBStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// binReader decodes the stored form. The first error sticks; later reads
// return zero values.
type binReader struct {
	b   []byte
	err bool
}

func (d *binReader) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n != uvarintLen(v) {
		d.err, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *binReader) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 || n != varintLen(v) {
		d.err, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

// bytes returns the next string's bytes (aliasing the input).
func (d *binReader) bytes() []byte {
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) {
		d.err, d.b = true, nil
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	if !utf8.Valid(s) {
		d.err, d.b = true, nil
		return nil
	}
	return s
}

// str reads a string into *dst, keeping *dst when the bytes are equal so
// that decoding many records into one Record allocates only what changes.
func (d *binReader) str(dst *string) {
	b := d.bytes()
	if string(b) != *dst {
		*dst = string(b)
	}
}

func (d *binReader) flag() bool {
	if len(d.b) == 0 || d.b[0] > 1 {
		d.err, d.b = true, nil
		return false
	}
	f := d.b[0] == 1
	d.b = d.b[1:]
	return f
}

func (d *binReader) fixed(n int) []byte {
	if len(d.b) < n {
		d.err, d.b = true, nil
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

// decodeBinary decodes a stored record into r, reusing r's strings where
// they are unchanged (Payment and BalanceAfter are always fresh, so a
// shallow copy of r taken earlier stays intact). It fills Prev and Hash.
func (r *Record) decodeBinary(v []byte) error {
	var prev, hash [32]byte
	if err := r.decodeBinaryHashes(v, &prev, &hash); err != nil {
		return err
	}
	var buf [64]byte
	hex.Encode(buf[:], prev[:])
	r.Prev = string(buf[:])
	hex.Encode(buf[:], hash[:])
	r.Hash = string(buf[:])
	return nil
}

// decodeBinaryHashes is decodeBinary returning prev and hash in binary
// and leaving r.Prev and r.Hash untouched.
func (r *Record) decodeBinaryHashes(v []byte, prev, hash *[32]byte) error {
	d := binReader{b: v}
	if len(v) == 0 || v[0] < binaryVersion || v[0] > binaryVersion5 {
		return errBinary
	}
	v2, v3, v4, v5 := v[0] >= binaryVersion2, v[0] >= binaryVersion3, v[0] >= binaryVersion4, v[0] == binaryVersion5
	d.b = d.b[1:]
	d.str(&r.Type)
	d.str(&r.Outcome)
	d.str(&r.Tool)
	r.Seq = d.uvarint()
	if at := d.fixed(8); at != nil {
		r.At = time.Unix(0, int64(binary.BigEndian.Uint64(at))).UTC()
	}
	d.str(&r.RequestID)
	d.str(&r.Principal)
	d.str(&r.Tier)
	d.str(&r.RateClass)
	d.str(&r.Reason)
	r.Status = int(d.varint())
	r.Cost = money.Micros(d.varint())
	d.str(&r.SpendDay)
	r.LatencyUS = d.varint()
	r.UpstreamStatus = int(d.varint())
	r.UpstreamLatencyUS = d.varint()
	old := r.Payment
	r.Payment = nil
	if d.flag() {
		p := &Payment{}
		if old != nil {
			*p = *old // a fresh Payment, but its unchanged strings are reused
		}
		p.Version = int(d.varint())
		d.str(&p.Scheme)
		d.str(&p.Network)
		d.str(&p.Payer)
		p.Amount = money.Micros(d.varint())
		d.str(&p.Nonce)
		r.Payment = p
	}
	d.str(&r.Kind)
	r.Amount = money.Micros(d.varint())
	r.BalanceAfter = nil
	if d.flag() {
		m := money.Micros(d.varint())
		r.BalanceAfter = &m
	}
	d.str(&r.Payer)
	d.str(&r.Network)
	d.str(&r.TxHash)
	r.Actor, r.State, r.Protocol, r.TokenID, r.ClientID, r.Node = "", nil, "", "", "", ""
	if v2 {
		d.str(&r.Actor)
		if st := d.bytes(); len(st) > 0 {
			r.State = append(json.RawMessage(nil), st...)
		}
		if !v3 && r.Actor == "" && len(r.State) == 0 {
			d.err = true // version 1 would have been written
		}
	}
	if v3 {
		d.str(&r.Protocol)
		if !v4 && r.Protocol == "" {
			d.err = true // version 2 or 1 would have been written
		}
	}
	if v4 {
		d.str(&r.TokenID)
		d.str(&r.ClientID)
		if !v5 && r.TokenID == "" && r.ClientID == "" {
			d.err = true // version 3 or lower would have been written
		}
	}
	if v5 {
		d.str(&r.Node)
		if r.Node == "" {
			d.err = true // version 4 or lower would have been written
		}
	}
	if h := d.fixed(32); h != nil {
		copy(prev[:], h)
	}
	if h := d.fixed(32); h != nil {
		copy(hash[:], h)
	}
	if d.err || len(d.b) != 0 {
		return errBinary
	}
	return nil
}

// binaryFilter returns the type, outcome and tool of a stored record
// without decoding the rest.
func binaryFilter(v []byte) (typ, outcome, tool []byte, ok bool) {
	if len(v) == 0 || v[0] < binaryVersion || v[0] > binaryVersion5 {
		return nil, nil, nil, false
	}
	d := binReader{b: v[1:]}
	typ, outcome, tool = d.bytes(), d.bytes(), d.bytes()
	return typ, outcome, tool, !d.err
}
