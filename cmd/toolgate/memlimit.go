package main

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryMax is cgroup v2's memory limit of this process's group.
var cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memoryLimit returns the soft memory limit serve sets for the Go
// runtime (debug.SetMemoryLimit) and where it comes from: the
// --memory-limit flag ("450MiB", "2GiB", "512MB", plain bytes; "off":
// none), else GOMEMLIMIT (the runtime applies it itself: 0 returned),
// else 90% of the cgroup's memory.max when the group has one (a
// container's limit: the collector then works harder before the kernel
// would kill the process), else none. The soft limit makes the collector
// run, and return freed memory, before the heap exceeds it; it never
// fails an allocation.
func memoryLimit(flag string) (limit int64, source string, err error) {
	switch flag {
	case "off", "none":
		return 0, "", nil
	case "":
	default:
		n, err := parseBytes(flag)
		if err != nil || n <= 0 {
			return 0, "", fmt.Errorf("--memory-limit %q: want a size such as 450MiB, 2GiB or 512MB, or off", flag)
		}
		return n, "--memory-limit", nil
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, "", nil
	}
	b, err := os.ReadFile(cgroupMemoryMax)
	if err != nil {
		return 0, "", nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64) // "max" when unlimited
	if err != nil || n <= 0 {
		return 0, "", nil
	}
	return n / 10 * 9, "90% of " + cgroupMemoryMax, nil
}

// applyMemoryLimit sets the limit memoryLimit returns, if any.
func applyMemoryLimit(limit int64) {
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
}

// parseBytes reads a size: digits and an optional unit (B, KB, MB, GB,
// KiB, MiB, GiB, case-insensitive).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]int64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%s: too large", s)
	}
	return n * mult, nil
}
