package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
)

// maxTokenFile bounds what readTokenFile reads: a token is a line, not a
// document.
const maxTokenFile = 4 << 10

// explicitAdminToken returns the admin token given with --admin-token or
// --admin-token-file (or their TOOLGATE_ environment variables), or "" when
// neither is set. Giving both is an error, so that it is never a guess
// which one is in force.
func explicitAdminToken(value, file string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", errors.New("--admin-token and --admin-token-file (or TOOLGATE_ADMIN_TOKEN and TOOLGATE_ADMIN_TOKEN_FILE) are exclusive: give one")
	case file != "":
		return readTokenFile(file)
	}
	return value, nil
}

// readTokenFile reads a secret token from path: the file must be readable
// by its owner only (no group or other permission bits, as the ledger's
// checkpoint key), and hold one non-empty token; surrounding white space
// (the trailing newline of `echo tok > file`) is trimmed. The error names
// the file, never its content.
func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	if fi.IsDir() {
		return "", fmt.Errorf("--admin-token-file: %s is a directory", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("--admin-token-file: %s has mode %v and is readable by group or others; chmod 600 it", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: read %s: %w", path, err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("--admin-token-file: %s is larger than %d bytes; it must hold one token", path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--admin-token-file: %s is empty", path)
	}
	if strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return "", fmt.Errorf("--admin-token-file: %s must hold one token on one line (found white space or control characters inside it)", path)
	}
	return tok, nil
}
