package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseRetain(t *testing.T) {
	tests := []struct {
		in, mode string
		want     time.Duration
		wantMode string
		err      string
	}{
		{in: "", mode: "compliance", wantMode: "COMPLIANCE"},
		{in: "400d", mode: "compliance", want: 400 * 24 * time.Hour, wantMode: "COMPLIANCE"},
		{in: "36h", mode: "governance", want: 36 * time.Hour, wantMode: "GOVERNANCE"},
		{in: "0d", mode: "compliance", err: "want 1d to 36500d"},
		{in: "-3d", mode: "compliance", err: "want 1d to 36500d"},
		{in: "10m", mode: "compliance", err: "at least 1h"},
		{in: "forever", mode: "compliance", err: "a number of days"},
		{in: "400d", mode: "legal-hold", err: `lock mode "legal-hold"`},
	}
	for _, tc := range tests {
		d, m, err := parseRetain(tc.in, tc.mode)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseRetain(%q, %q) error %v, want one containing %q", tc.in, tc.mode, err, tc.err)
			}
			continue
		}
		if err != nil || d != tc.want || string(m) != tc.wantMode {
			t.Errorf("parseRetain(%q, %q) = %v, %q, %v; want %v, %q", tc.in, tc.mode, d, m, err, tc.want, tc.wantMode)
		}
	}
}

func TestS3Flags_Open(t *testing.T) {
	tests := []struct {
		name string
		f    s3Flags
		url  string
		err  string
	}{
		{name: "OK", f: s3Flags{endpoint: "http://127.0.0.1:7070", pathStyle: "auto"}, url: "s3://b/p"},
		{name: "NotS3", f: s3Flags{pathStyle: "auto"}, url: "https://b/p", err: "want s3://bucket/prefix"},
		{name: "EndpointWithCredentials", f: s3Flags{endpoint: "http://u:p@127.0.0.1:7070", pathStyle: "auto"}, url: "s3://b", err: "without credentials"},
		{name: "EndpointScheme", f: s3Flags{endpoint: "127.0.0.1:7070", pathStyle: "auto"}, url: "s3://b", err: "want http(s)://host"},
		{name: "PathStyle", f: s3Flags{pathStyle: "maybe"}, url: "s3://b", err: "want auto, true or false"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.f.open(context.Background(), tc.url)
			if tc.err == "" {
				if err != nil || b == nil {
					t.Fatalf("open: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "u:p@") {
				t.Fatalf("error repeats the credentials: %v", err)
			}
		})
	}
}
