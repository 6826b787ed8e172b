// Package money holds toolgate's unit of account: integer micro-USD.
//
// One micro-USD equals one atomic unit of USDC (6 decimals), so prices,
// spend caps, credits and x402 amounts share one integer type and never
// pass through a float. The package parses exact decimals and formats them
// back; it owns no state.
package money

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
)

// Micros is an amount in micro-USD (1e-6 USD, one USDC atomic unit).
// The zero value is zero dollars.
type Micros int64

// PerUSD is the number of Micros in one dollar.
const PerUSD Micros = 1_000_000

// MaxAmount is the largest amount toolgate accepts where one is configured
// or sent: a tool's price, a daily spend cap, a credit top-up or a key's
// initial credits ($1 000 000). Sums of such amounts are made with Add,
// which refuses to wrap, so no total can turn negative.
const MaxAmount Micros = 1_000_000 * PerUSD

// Parse errors, compared with errors.Is.
var (
	ErrSyntax    = errors.New("money: not a decimal number")
	ErrPrecision = errors.New("money: more than 6 decimal places")
	ErrNegative  = errors.New("money: negative amount")
	ErrRange     = errors.New("money: amount too large")
	ErrTooLarge  = errors.New("money: more than 1000000 USD")
)

// Parse reads a non-negative decimal dollar amount such as "0.01", "5" or
// "12.345678" exactly. Exponents, signs, more than six decimals and
// surrounding spaces are rejected.
func Parse(s string) (Micros, error) {
	if s == "" {
		return 0, ErrSyntax
	}
	if s[0] == '-' {
		return 0, ErrNegative
	}
	var whole, frac int64
	i, digits := 0, 0
	for ; i < len(s) && s[i] != '.'; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, ErrSyntax
		}
		if whole > (math.MaxInt64/int64(PerUSD)-9)/10 {
			return 0, ErrRange
		}
		whole = whole*10 + int64(c-'0')
		digits++
	}
	if i < len(s) { // fraction
		i++
		n := 0
		for ; i < len(s); i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, ErrSyntax
			}
			if n == 6 {
				if c != '0' {
					return 0, ErrPrecision
				}
				continue
			}
			frac = frac*10 + int64(c-'0')
			n++
			digits++
		}
		if n == 0 && digits == 0 {
			return 0, ErrSyntax
		}
		for ; n < 6; n++ {
			frac *= 10
		}
	}
	if digits == 0 {
		return 0, ErrSyntax
	}
	return Micros(whole*int64(PerUSD) + frac), nil
}

// ParseJSON reads an amount given in JSON either as a string ("0.01") or as
// a number literal (0.01). The literal's text is parsed, never a float.
func ParseJSON(raw json.RawMessage) (Micros, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, ErrSyntax
		}
		return Parse(s)
	}
	return Parse(string(raw))
}

// ParseAmount is ParseJSON for an amount an operator or admin sets (a
// price, a cap, a top-up): it also refuses more than MaxAmount, with
// ErrTooLarge.
func ParseAmount(raw json.RawMessage) (Micros, error) {
	m, err := ParseJSON(raw)
	if err == nil && m > MaxAmount {
		return 0, ErrTooLarge
	}
	if errors.Is(err, ErrRange) {
		err = ErrTooLarge
	}
	return m, err
}

// Add returns m + n and true, or 0 and false when the sum does not fit in
// a Micros (it would wrap). Callers refuse the operation that needed it.
func (m Micros) Add(n Micros) (Micros, bool) {
	s := m + n
	if (n > 0 && s < m) || (n < 0 && s > m) {
		return 0, false
	}
	return s, true
}

// SatAdd returns m + n, saturated at the largest (or smallest) Micros
// instead of wrapped: for sums that are reported, not charged.
func (m Micros) SatAdd(n Micros) Micros {
	if s, ok := m.Add(n); ok {
		return s
	}
	if n > 0 {
		return math.MaxInt64
	}
	return math.MinInt64
}

// Sub returns m - n and true, or 0 and false when the difference does not
// fit in a Micros.
func (m Micros) Sub(n Micros) (Micros, bool) {
	d := m - n
	if (n > 0 && d > m) || (n < 0 && d < m) {
		return 0, false
	}
	return d, true
}

// ParseAtomic reads an integer count of atomic units ("10000"), the form
// x402 uses for amounts.
func ParseAtomic(s string) (Micros, error) {
	if s == "" || len(s) > 18 {
		return 0, ErrSyntax
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || s[0] == '+' || (len(s) > 1 && s[0] == '0') {
		return 0, ErrSyntax
	}
	return Micros(n), nil
}

// AppendDecimal appends m in dollars with at least minDecimals decimals
// (at most 6) and no trailing zeros beyond them: with minDecimals 3,
// 10000 → "0.010", 1500 → "0.0015"; with 1, 5000000 → "5.0".
func (m Micros) AppendDecimal(dst []byte, minDecimals int) []byte {
	if m < 0 {
		dst = append(dst, '-')
		m = -m
	}
	dst = strconv.AppendInt(dst, int64(m/PerUSD), 10)
	frac := int64(m % PerUSD)
	var buf [6]byte
	for i := 5; i >= 0; i-- {
		buf[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := 6
	for n > minDecimals && buf[n-1] == '0' {
		n--
	}
	if n > 0 {
		dst = append(dst, '.')
		dst = append(dst, buf[:n]...)
	}
	return dst
}

// String formats m with two decimals at least ("0.01", "5.00", "0.0015").
func (m Micros) String() string { return string(m.AppendDecimal(nil, 2)) }

// AppendAtomic appends m as an integer count of atomic units ("10000").
func (m Micros) AppendAtomic(dst []byte) []byte { return strconv.AppendInt(dst, int64(m), 10) }

// MarshalJSON writes m as a JSON number in dollars with at least one
// decimal (5.0, 0.01), the form the API's response bodies use.
func (m Micros) MarshalJSON() ([]byte, error) { return m.AppendDecimal(nil, 1), nil }
