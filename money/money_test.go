package money

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Micros
		err  error
	}{
		{"cent", "0.01", 10_000, nil},
		{"whole", "5", 5_000_000, nil},
		{"six decimals", "12.345678", 12_345_678, nil},
		{"trailing zeros past six", "0.0100000", 10_000, nil},
		{"leading dot", ".5", 500_000, nil},
		{"trailing dot", "3.", 3_000_000, nil},
		{"zero", "0", 0, nil},
		{"seven decimals", "0.0000001", 0, ErrPrecision},
		{"negative", "-1", 0, ErrNegative},
		{"exponent", "1e3", 0, ErrSyntax},
		{"empty", "", 0, ErrSyntax},
		{"dot only", ".", 0, ErrSyntax},
		{"space", " 1", 0, ErrSyntax},
		{"huge", "99999999999999999999", 0, ErrRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) err = %v, want %v", tt.in, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseJSON(t *testing.T) {
	for in, want := range map[string]Micros{`"0.01"`: 10_000, `0.01`: 10_000, `50`: 50_000_000} {
		got, err := ParseJSON(json.RawMessage(in))
		if err != nil || got != want {
			t.Errorf("ParseJSON(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseJSON(json.RawMessage(`true`)); err == nil {
		t.Error("ParseJSON(true) succeeded, want error")
	}
}

func TestParseAtomic(t *testing.T) {
	if got, err := ParseAtomic("10000"); err != nil || got != 10_000 {
		t.Fatalf("ParseAtomic = %d, %v", got, err)
	}
	for _, bad := range []string{"", "-1", "+1", "01", "1.0", "0x10", "1234567890123456789"} {
		if _, err := ParseAtomic(bad); err == nil {
			t.Errorf("ParseAtomic(%q) succeeded, want error", bad)
		}
	}
}

func TestMicros_AppendDecimal(t *testing.T) {
	tests := []struct {
		m    Micros
		min  int
		want string
	}{
		{10_000, 3, "0.010"},
		{1_500, 3, "0.0015"},
		{5_000_000, 1, "5.0"},
		{830_000, 2, "0.83"},
		{1, 0, "0.000001"},
		{7_000_000, 0, "7"},
		{-10_000, 2, "-0.01"},
	}
	for _, tt := range tests {
		if got := string(tt.m.AppendDecimal(nil, tt.min)); got != tt.want {
			t.Errorf("%d.AppendDecimal(%d) = %q, want %q", tt.m, tt.min, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0.01", "5", "12.345678", "1e3", "-1", ".", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err != nil {
			return
		}
		if m < 0 {
			t.Fatalf("Parse(%q) = %d, negative", s, m)
		}
		back, err := Parse(string(m.AppendDecimal(nil, 0)))
		if err != nil || back != m {
			t.Fatalf("round trip of %q: %d -> %d, %v", s, m, back, err)
		}
	})
}

func TestMicros_Add(t *testing.T) {
	const maxM, minM = Micros(math.MaxInt64), Micros(math.MinInt64)
	tests := []struct {
		name string
		m, n Micros
		want Micros
		ok   bool
	}{
		{"small", 10_000, 20_000, 30_000, true},
		{"zero", 0, 0, 0, true},
		{"negative", 10_000, -30_000, -20_000, true},
		{"to the maximum", maxM - 1, 1, maxM, true},
		{"past the maximum", maxM, 1, 0, false},
		{"two max amounts near the top", maxM - MaxAmount + 1, MaxAmount, 0, false},
		{"price of issue 17 twice", 9_000_000_000_000 * PerUSD, 9_000_000_000_000 * PerUSD, 0, false},
		{"to the minimum", minM + 1, -1, minM, true},
		{"past the minimum", minM, -1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.m.Add(tt.n)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("%d.Add(%d) = %d, %t; want %d, %t", tt.m, tt.n, got, ok, tt.want, tt.ok)
			}
			sat := tt.want
			if !tt.ok && tt.n > 0 {
				sat = maxM
			} else if !tt.ok {
				sat = minM
			}
			if got := tt.m.SatAdd(tt.n); got != sat {
				t.Fatalf("%d.SatAdd(%d) = %d, want %d", tt.m, tt.n, got, sat)
			}
		})
	}
}

func TestMicros_Sub(t *testing.T) {
	const maxM, minM = Micros(math.MaxInt64), Micros(math.MinInt64)
	tests := []struct {
		name string
		m, n Micros
		want Micros
		ok   bool
	}{
		{"small", 30_000, 10_000, 20_000, true},
		{"below zero", 10_000, 30_000, -20_000, true},
		{"to the minimum", minM + 1, 1, minM, true},
		{"past the minimum", minM, 1, 0, false},
		{"negative n to the maximum", maxM - 1, -1, maxM, true},
		{"negative n past the maximum", maxM, -1, 0, false},
		{"minimum subtracted", 0, minM, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.m.Sub(tt.n)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("%d.Sub(%d) = %d, %t; want %d, %t", tt.m, tt.n, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseAmount(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Micros
		err  error
	}{
		{"cent", `"0.01"`, 10_000, nil},
		{"number", `5`, 5_000_000, nil},
		{"the maximum", `"1000000"`, MaxAmount, nil},
		{"the maximum with zeros", `1000000.000000`, MaxAmount, nil},
		{"one micro over", `"1000000.000001"`, 0, ErrTooLarge},
		{"issue 17 price", `"9000000000000"`, 0, ErrTooLarge},
		{"beyond int64", `"99999999999999999999"`, 0, ErrTooLarge},
		{"negative", `"-1"`, 0, ErrNegative},
		{"seven decimals", `"0.0000001"`, 0, ErrPrecision},
		{"not a number", `true`, 0, ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAmount(json.RawMessage(tt.in))
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Fatalf("ParseAmount(%s) = %d, %v; want %d, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}
