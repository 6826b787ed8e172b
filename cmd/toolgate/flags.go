package main

import (
	"flag"
	"os"
	"strings"
)

// envDefaults lets every flag of fs default to TOOLGATE_<NAME> from the
// environment (dashes become underscores). Flags given on the command
// line win.
func envDefaults(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "TOOLGATE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && err == nil {
			err = f.Value.Set(v)
		}
	})
	return err
}
