//go:build !unix

package main

// lockShared is a no-op where flock does not exist.
func lockShared(dir string) (unlock func(), err error) { return func() {}, nil }

func freeSpace(dir string) string { return "" }
