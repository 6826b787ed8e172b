package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMemoryLimit: the flag wins, then GOMEMLIMIT (left to the runtime),
// then 90% of the cgroup's memory.max; "max" and no file mean none; a bad
// size is refused naming the flag.
func TestMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	cg := filepath.Join(dir, "memory.max")
	old := cgroupMemoryMax
	cgroupMemoryMax = cg
	defer func() { cgroupMemoryMax = old }()
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")

	for _, tt := range []struct {
		name, flag, env, cgroup string
		want                    int64
		bad                     bool
	}{
		{name: "Flag", flag: "450MiB", cgroup: "1000000000", want: 450 << 20},
		{name: "FlagMB", flag: "512MB", want: 512e6},
		{name: "FlagBytes", flag: "1048576", want: 1 << 20},
		{name: "Off", flag: "off", cgroup: "1000000000", want: 0},
		{name: "Env", env: "300MiB", cgroup: "1000000000", want: 0},
		{name: "Cgroup", cgroup: "1000000000\n", want: 900000000},
		{name: "CgroupMax", cgroup: "max\n", want: 0},
		{name: "NoCgroup", want: 0},
		{name: "BadUnit", flag: "450XB", bad: true},
		{name: "Negative", flag: "-5MiB", bad: true},
		{name: "Zero", flag: "0", bad: true},
		{name: "Overflow", flag: "99999999999GiB", bad: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(cg)
			if tt.cgroup != "" {
				os.WriteFile(cg, []byte(tt.cgroup), 0o600)
			}
			if tt.env != "" {
				t.Setenv("GOMEMLIMIT", tt.env)
			} else {
				os.Unsetenv("GOMEMLIMIT")
			}
			got, _, err := memoryLimit(tt.flag)
			if tt.bad {
				if err == nil {
					t.Fatalf("got %d, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}
