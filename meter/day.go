package meter

import (
	"sync/atomic"
	"time"
)

// Day is a civil date (in the spend reset time zone) as the number of days
// since 1970-01-01. The zero value is 1970-01-01. Days compare and subtract
// as integers.
type Day int32

const secondsPerDay = 86400

// civilDay returns the Day of the date y-m-d; out-of-range m or d are
// normalized as time.Date does.
func civilDay(y int, m time.Month, d int) Day {
	u := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix()
	return Day(floorDiv(u, secondsPerDay))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// localDay returns the civil date of t in loc.
func localDay(t time.Time, loc *time.Location) Day {
	y, m, d := t.In(loc).Date()
	return civilDay(y, m, d)
}

// dayCache remembers the last day DayOf computed: instants in
// [from, until) (Unix ns) of zone loc fall on day.
type dayCache struct {
	loc         *time.Location
	from, until int64
	day         Day
	resetAt     time.Time
}

var lastDay atomic.Pointer[dayCache]

// DayOf returns the civil date of now in loc (nil means UTC) and resetAt,
// the first instant of the next civil date in loc, as a UTC time: local
// midnight normally, or the instant the clocks jump past it on a day
// whose midnight is skipped or repeated by a DST change.
//
// The last answer is cached, so calls for the current day in the
// gateway's one zone cost a few nanoseconds and allocate nothing; a new
// day or another zone costs a computation and one small allocation. Safe
// for concurrent use.
func DayOf(now time.Time, loc *time.Location) (day Day, resetAt time.Time) {
	if loc == nil {
		loc = time.UTC
	}
	ns := now.UnixNano()
	c := lastDay.Load()
	if c != nil && c.loc == loc && ns >= c.from && ns < c.until {
		return c.day, c.resetAt
	}
	day, resetAt = computeDay(now, loc)
	from := ns
	if c != nil && c.loc == loc && c.day == day {
		from = min(from, c.from)
	}
	lastDay.Store(&dayCache{loc: loc, from: from, until: resetAt.UnixNano(), day: day, resetAt: resetAt})
	return day, resetAt
}

// computeDay is DayOf without the cache.
func computeDay(now time.Time, loc *time.Location) (day Day, resetAt time.Time) {
	y, m, d := now.In(loc).Date()
	day = civilDay(y, m, d)
	next := time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	if localDay(next, loc) > day && localDay(next.Add(-time.Second), loc) <= day {
		return day, next.UTC()
	}
	// Midnight does not exist or exists twice: find the first second whose
	// local date is after day. Zone transitions fall on whole seconds.
	lo, hi := now.Unix(), now.Unix()+2*secondsPerDay
	for localDay(time.Unix(hi, 0), loc) <= day {
		hi += secondsPerDay
	}
	for hi-lo > 1 { // invariant: localDay(lo) <= day < localDay(hi)
		mid := lo + (hi-lo)/2
		if localDay(time.Unix(mid, 0), loc) > day {
			hi = mid
		} else {
			lo = mid
		}
	}
	return day, time.Unix(hi, 0).UTC()
}

// Time returns midnight UTC at the start of d, the date's calendar label.
func (d Day) Time() time.Time { return time.Unix(int64(d)*secondsPerDay, 0).UTC() }

// String formats d as "2026-11-26".
func (d Day) String() string { return d.Time().Format(time.DateOnly) }
