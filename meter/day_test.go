package meter

import (
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // zones must not depend on the host
)

func mustLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return loc
}

func TestDayOf(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name    string
		zone    string // "" means nil location
		now     string
		day     string
		resetAt string
	}{
		{"UTC", "UTC", "2026-11-26T10:00:00Z", "2026-11-26", "2026-11-27T00:00:00Z"},
		{"NilLocationIsUTC", "", "2026-11-26T23:59:59Z", "2026-11-26", "2026-11-27T00:00:00Z"},
		{"UTCMidnightStartsDay", "UTC", "2026-11-27T00:00:00Z", "2026-11-27", "2026-11-28T00:00:00Z"},
		{"NewYorkEveningIsPreviousDate", "America/New_York", "2026-11-27T03:00:00Z", "2026-11-26", "2026-11-27T05:00:00Z"},
		{"NewYorkBeforeSpringForward", "America/New_York", "2026-03-07T17:00:00Z", "2026-03-07", "2026-03-08T05:00:00Z"},
		{"NewYorkSpringForwardDay", "America/New_York", "2026-03-08T17:00:00Z", "2026-03-08", "2026-03-09T04:00:00Z"},
		{"NewYorkSpringForwardJustAfterMidnight", "America/New_York", "2026-03-08T05:00:00Z", "2026-03-08", "2026-03-09T04:00:00Z"},
		{"NewYorkBeforeFallBack", "America/New_York", "2026-10-31T16:00:00Z", "2026-10-31", "2026-11-01T04:00:00Z"},
		{"NewYorkFallBackFirstOneThirty", "America/New_York", "2026-11-01T05:30:00Z", "2026-11-01", "2026-11-02T05:00:00Z"},
		{"NewYorkFallBackSecondOneThirty", "America/New_York", "2026-11-01T06:30:00Z", "2026-11-01", "2026-11-02T05:00:00Z"},
		{"NewYorkLastSecondOfFallBackDay", "America/New_York", "2026-11-02T04:59:59Z", "2026-11-01", "2026-11-02T05:00:00Z"},
		{"Kolkata", "Asia/Kolkata", "2026-11-26T18:29:59Z", "2026-11-26", "2026-11-26T18:30:00Z"},
		{"KolkataNextDay", "Asia/Kolkata", "2026-11-26T18:30:00Z", "2026-11-27", "2026-11-27T18:30:00Z"},
		{"KiritimatiAhead", "Pacific/Kiritimati", "2026-11-26T11:00:00Z", "2026-11-27", "2026-11-27T10:00:00Z"},
		{"PagoPagoBehind", "Pacific/Pago_Pago", "2026-11-26T10:00:00Z", "2026-11-25", "2026-11-26T11:00:00Z"},
		// Havana springs forward at midnight: 2026-03-08 starts at 01:00 CDT.
		{"HavanaMidnightSkipped", "America/Havana", "2026-03-07T20:00:00Z", "2026-03-07", "2026-03-08T05:00:00Z"},
		// Havana falls back at 01:00 CDT to 00:00 CST: midnight happens twice.
		{"HavanaMidnightRepeated", "America/Havana", "2026-10-31T20:00:00Z", "2026-10-31", "2026-11-01T04:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var loc *time.Location
			if tt.zone != "" {
				loc = mustLoad(t, tt.zone)
			}
			day, resetAt := DayOf(utc(tt.now), loc)
			if got := day.String(); got != tt.day {
				t.Errorf("day: got %s, want %s", got, tt.day)
			}
			if !resetAt.Equal(utc(tt.resetAt)) || resetAt.Location() != time.UTC {
				t.Errorf("resetAt: got %s, want %s", resetAt, tt.resetAt)
			}
		})
	}
}

// TestDayOf_AllZonesHourly checks, every hour of 2026 in zones with DST at
// 02:00, at midnight and with odd offsets, that resetAt is the first
// instant of the next local date.
func TestDayOf_AllZonesHourly(t *testing.T) {
	zones := []string{"UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe",
		"America/Havana", "America/Santiago", "Asia/Beirut", "America/Asuncion",
		"Asia/Kathmandu", "Pacific/Chatham", "Pacific/Apia"}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, z := range zones {
		t.Run(z, func(t *testing.T) {
			loc := mustLoad(t, z)
			for h := 0; h < 366*24; h++ {
				now := start.Add(time.Duration(h)*time.Hour + 17*time.Minute)
				day, resetAt := DayOf(now, loc)
				if want := localDay(now, loc); day != want {
					t.Fatalf("%s: day got %s, want %s", now, day, want)
				}
				if !resetAt.After(now) {
					t.Fatalf("%s: resetAt %s not after now", now, resetAt)
				}
				if got := localDay(resetAt, loc); got != day+1 {
					t.Fatalf("%s: date at resetAt %s got %s, want %s", now, resetAt, got, day+1)
				}
				if got := localDay(resetAt.Add(-time.Second), loc); got != day {
					t.Fatalf("%s: date before resetAt %s got %s, want %s", now, resetAt, got, day)
				}
			}
		})
	}
}

func TestDay_String(t *testing.T) {
	tests := []struct {
		name string
		day  Day
		want string
	}{
		{"Epoch", 0, "1970-01-01"},
		{"BeforeEpoch", -1, "1969-12-31"},
		{"Recent", civilDay(2026, time.November, 26), "2026-11-26"},
		{"LeapDay", civilDay(2028, time.February, 29), "2028-02-29"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.day.String(); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestDayOf_Concurrent alternates zones and days from many goroutines so
// the shared cache is replaced while read; every answer must still match
// the uncached computation.
func TestDayOf_Concurrent(t *testing.T) {
	locs := []*time.Location{mustLoad(t, "America/New_York"), mustLoad(t, "Asia/Tokyo"), time.UTC}
	start := time.Date(2026, 3, 7, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 2000; i++ {
				loc := locs[(g+i)%len(locs)]
				now := start.Add(time.Duration((g*7919+i*104729)%(72*3600)) * time.Second)
				day, resetAt := DayOf(now, loc)
				wantDay, wantReset := computeDay(now, loc)
				if day != wantDay || !resetAt.Equal(wantReset) {
					t.Errorf("%s in %s: got %s %s, want %s %s", now, loc, day, resetAt, wantDay, wantReset)
					return
				}
			}
		})
	}
	wg.Wait()
}
