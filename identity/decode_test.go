package identity

import (
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// decodeJSON is the reference: what Open did before the fast path.
func decodeJSON(t *testing.T, v []byte) (Key, error) {
	t.Helper()
	var sk storedKey
	if err := json.Unmarshal(v, &sk); err != nil {
		return Key{}, err
	}
	h, err := hex.DecodeString(sk.HashHex)
	if err != nil || len(h) != 32 {
		return Key{}, errBadDigest
	}
	k := Key{ID: sk.ID, Name: sk.Name, Hint: sk.Hint,
		created: unixOf(sk.CreatedAt), expires: unixOf(sk.ExpiresAt), revoked: unixOf(sk.RevokedAt)}
	copy(k.Hash[:], h)
	return k, nil
}

func TestDecodeStored(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	marshal := func(k keyJSON) string {
		b, err := json.Marshal(storedKey{keyJSON: k, HashHex: digest})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name string
		row  string
		fast bool // the row is in put's exact form
	}{
		{"Minimal", marshal(keyJSON{ID: "k_A", Hint: "it-ABCD…", CreatedAt: now}), true},
		{"Named", marshal(keyJSON{ID: "k_A", Name: "ci runner", Hint: "it-ABCD…", CreatedAt: now}), true},
		{"ExpiresRevoked", marshal(keyJSON{ID: "k_A", Name: "x", Hint: "it-ABCD…", CreatedAt: now,
			ExpiresAt: now.Add(time.Hour), RevokedAt: now.Add(time.Minute)}), true},
		{"RevokedOnly", marshal(keyJSON{ID: "k_A", Hint: "h", CreatedAt: now, RevokedAt: now}), true},
		{"EscapedName", marshal(keyJSON{ID: "k_A", Name: `a "quoted" <name>`, Hint: "h", CreatedAt: now}), false},
		{"NonUTCOffset", `{"key_id":"k_A","key":"h","created_at":"2026-12-01T11:00:00+01:00","sha256":"` + digest + `"}`, true},
		{"FieldOrder", `{"key":"h","key_id":"k_A","created_at":"2026-12-01T10:00:00Z","sha256":"` + digest + `"}`, false},
		{"Whitespace", `{"key_id": "k_A","key":"h","created_at":"2026-12-01T10:00:00Z","sha256":"` + digest + `"}`, false},
		{"InvalidUTF8", "{\"key_id\":\"k_A\",\"name\":\"\xff\",\"key\":\"h\",\"created_at\":\"2026-12-01T10:00:00Z\",\"sha256\":\"" + digest + "\"}", false},
		{"BadDigest", `{"key_id":"k_A","key":"h","created_at":"2026-12-01T10:00:00Z","sha256":"zz"}`, false},
		{"BadTime", `{"key_id":"k_A","key":"h","created_at":"yesterday","sha256":"` + digest + `"}`, false},
		{"Trailing", `{"key_id":"k_A","key":"h","created_at":"2026-12-01T10:00:00Z","sha256":"` + digest + `"}x`, false},
		{"NotJSON", `nope`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fast Key
			fastErr := decodeFast([]byte(tt.row), &fast)
			if (fastErr == nil) != tt.fast {
				t.Fatalf("fast path taken = %v, want %v", fastErr == nil, tt.fast)
			}
			var got Key
			gotErr := decodeStored([]byte(tt.row), &got)
			want, wantErr := decodeJSON(t, []byte(tt.row))
			if (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("decodeStored err = %v, encoding/json err = %v", gotErr, wantErr)
			}
			if got.Principal != "" && got.Principal != "key:"+got.ID {
				t.Fatalf("principal %q for id %q", got.Principal, got.ID)
			}
			got.Principal = "" // set by index on the reference path
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

// TestEstimateKeys checks that the index size hint never counts rows of
// other prefixes, however many share a table with the keys.
func TestEstimateKeys(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	wb := db.NewWriteBatch()
	for i := range 20000 {
		// Ledger-like rows on both sides of the key prefix, so that the
		// flushed table straddles it.
		for _, k := range []string{"a/" + strconv.Itoa(i), "l/" + strconv.Itoa(i)} {
			if err := wb.Set([]byte(k), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 10 {
		if err := wb.Set([]byte(keyPrefix+"k_"+strconv.Itoa(i)), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	db.Close() // flushes the memtable into a table
	db = openDB(t, dir)
	defer db.Close()
	straddling := 0
	for _, tb := range db.Tables() {
		if string(tb.Left) < keyPrefix && string(tb.Right) > keyPrefix+"\xff" {
			straddling += int(tb.KeyCount)
		}
	}
	if straddling < 40000 {
		t.Fatalf("setup: %d rows in tables straddling the key prefix, want the 40 010 written", straddling)
	}
	if n := estimateKeys(db, keyPrefix); n > 10 {
		t.Fatalf("estimateKeys = %d, want at most the 10 key rows", n)
	}
}
