package ship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Store is what Verify reads: a Bucket, or a Dir holding a copy of one.
type Store interface {
	get(ctx context.Context, rel string, max int64) ([]byte, error)
	files(ctx context.Context, rel string) ([]string, error)
	dirs(ctx context.Context, rel string) ([]string, error)
}

var (
	_ Store = (*Bucket)(nil)
	_ Store = Dir("")
)

// Dir is a local copy of a shipped prefix (aws s3 sync s3://bucket/prefix
// DIR): DIR/<node>/<day>/…, for verification without access to the
// bucket.
type Dir string

func (d Dir) path(rel string) (string, error) {
	if strings.Contains(rel, "..") || strings.HasPrefix(rel, "/") {
		return "", fmt.Errorf("path %q outside the copy", rel)
	}
	return filepath.Join(string(d), filepath.FromSlash(rel)), nil
}

func (d Dir) get(_ context.Context, rel string, max int64) ([]byte, error) {
	p, err := d.path(rel)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", rel, errNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", rel, max)
	}
	return data, nil
}

func (d Dir) list(rel string, wantDir bool) ([]string, error) {
	p, err := d.path(rel)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() == wantDir {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

func (d Dir) files(_ context.Context, rel string) ([]string, error) { return d.list(rel, false) }
func (d Dir) dirs(_ context.Context, rel string) ([]string, error)  { return d.list(rel, true) }
