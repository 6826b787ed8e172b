package ship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Location is a bucket and a key prefix, parsed from s3://bucket/prefix.
type Location struct {
	Bucket, Prefix string // Prefix is "" or ends with "/"
}

// ParseLocation parses "s3://bucket" or "s3://bucket/prefix".
func ParseLocation(s string) (Location, error) {
	u, err := url.Parse(s)
	if err == nil && u.User != nil {
		return Location{}, errors.New("s3 URL: want s3://bucket/prefix, without credentials")
	}
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return Location{}, fmt.Errorf("%q: want s3://bucket/prefix", s)
	}
	p := strings.Trim(u.Path, "/")
	if p != "" {
		p += "/"
	}
	return Location{Bucket: u.Host, Prefix: p}, nil
}

func (l Location) String() string { return "s3://" + l.Bucket + "/" + l.Prefix }

// ClientOptions configure the S3 client. Credentials, and the region and
// endpoint when not given here, come from the AWS SDK's usual sources:
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
// AWS_PROFILE and the shared config files, AWS_REGION, AWS_ENDPOINT_URL_S3
// or AWS_ENDPOINT_URL, web identity and instance roles.
type ClientOptions struct {
	Endpoint  string // e.g. http://127.0.0.1:7070 for an S3-compatible store
	Region    string // default: the SDK's, else us-east-1
	PathStyle bool   // bucket in the path, as S3-compatible stores want
}

// Bucket is the S3 bucket and prefix shipped days are read from and
// written to. It is safe for concurrent use.
type Bucket struct {
	c   *s3.Client
	loc Location
}

// Open builds the client for loc. It makes no request.
func Open(ctx context.Context, loc Location, o ClientOptions) (*Bucket, error) {
	var lo []func(*config.LoadOptions) error
	if o.Region != "" {
		lo = append(lo, config.WithRegion(o.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("s3 config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	c := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		// The SHA-256 of every object is computed here and sent as
		// x-amz-checksum-sha256 (and required with Object Lock); no
		// aws-chunked trailers, which not every S3-compatible store reads.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &Bucket{c: c, loc: loc}, nil
}

// Location returns where the bucket points.
func (b *Bucket) Location() Location { return b.loc }

func (b *Bucket) key(rel string) string { return b.loc.Prefix + rel }

// object is what a HEAD tells of an object.
type object struct {
	size        int64
	sha256      string // hex, from our metadata; "" when absent
	lockMode    string
	retainUntil time.Time
}

// head returns the object at rel, or ok false when there is none.
func (b *Bucket) head(ctx context.Context, rel string) (object, bool, error) {
	out, err := b.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.key(rel))})
	if isNotFound(err) {
		return object{}, false, nil
	}
	if err != nil {
		return object{}, false, fmt.Errorf("head %s: %w", rel, err)
	}
	o := object{size: aws.ToInt64(out.ContentLength), sha256: out.Metadata["sha256"], lockMode: string(out.ObjectLockMode)}
	if out.ObjectLockRetainUntilDate != nil {
		o.retainUntil = *out.ObjectLockRetainUntilDate
	}
	return o, true, nil
}

// get returns the object at rel, or errNotFound.
func (b *Bucket) get(ctx context.Context, rel string, max int64) ([]byte, error) {
	out, err := b.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.key(rel))})
	if isNotFound(err) {
		return nil, fmt.Errorf("%s: %w", rel, errNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", rel, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", rel, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("get %s: larger than %d bytes", rel, max)
	}
	return data, nil
}

// hashObject streams the object at rel and returns its SHA-256 (hex) and
// size.
func (b *Bucket) hashObject(ctx context.Context, rel string) (string, int64, error) {
	out, err := b.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.loc.Bucket, Key: aws.String(b.key(rel))})
	if isNotFound(err) {
		return "", 0, fmt.Errorf("%s: %w", rel, errNotFound)
	}
	if err != nil {
		return "", 0, fmt.Errorf("get %s: %w", rel, err)
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		return "", 0, fmt.Errorf("get %s: %w", rel, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// putOptions are the headers a put adds.
type putOptions struct {
	contentType string
	lockMode    types.ObjectLockMode // "" = no retention
	retainUntil time.Time
}

// put uploads data (size bytes, SHA-256 sum) to rel in one request, with
// the sum as x-amz-checksum-sha256 (checked by the store) and as
// x-amz-meta-sha256 (read back by head).
func (b *Bucket) put(ctx context.Context, rel string, body io.ReadSeeker, size int64, sum []byte, po putOptions) error {
	in := &s3.PutObjectInput{
		Bucket: &b.loc.Bucket, Key: aws.String(b.key(rel)), Body: body,
		ContentLength:  aws.Int64(size),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum)),
		Metadata:       map[string]string{"sha256": hex.EncodeToString(sum)},
	}
	if po.contentType != "" {
		in.ContentType = aws.String(po.contentType)
	}
	if po.lockMode != "" {
		in.ObjectLockMode = po.lockMode
		in.ObjectLockRetainUntilDate = aws.Time(po.retainUntil.UTC())
	}
	if _, err := b.c.PutObject(ctx, in); err != nil {
		return fmt.Errorf("put %s: %w", rel, err)
	}
	return nil
}

// putFile uploads the local file path to rel.
func (b *Bucket) putFile(ctx context.Context, rel, path string, sum []byte, po putOptions) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), b.put(ctx, rel, f, fi.Size(), sum, po)
}

// putBytes uploads data to rel.
func (b *Bucket) putBytes(ctx context.Context, rel string, data []byte, po putOptions) error {
	s := sha256.Sum256(data)
	return b.put(ctx, rel, bytes.NewReader(data), int64(len(data)), s[:], po)
}

// dirs lists the "directories" directly under rel (which ends in "/"),
// as names without the trailing slash, sorted.
func (b *Bucket) dirs(ctx context.Context, rel string) ([]string, error) {
	return b.list(ctx, rel, func(page *s3.ListObjectsV2Output, add func(string)) {
		for _, cp := range page.CommonPrefixes {
			add(strings.TrimSuffix(aws.ToString(cp.Prefix), "/"))
		}
	})
}

// files lists the object names directly under rel (which ends in "/").
func (b *Bucket) files(ctx context.Context, rel string) ([]string, error) {
	return b.list(ctx, rel, func(page *s3.ListObjectsV2Output, add func(string)) {
		for _, o := range page.Contents {
			add(aws.ToString(o.Key))
		}
	})
}

// list pages through the listing directly under rel; each page hands its
// keys to add, which keeps the non-empty names relative to rel. The
// names come back sorted.
func (b *Bucket) list(ctx context.Context, rel string, each func(page *s3.ListObjectsV2Output, add func(string))) ([]string, error) {
	prefix := b.key(rel)
	var out []string
	add := func(key string) {
		if name := strings.TrimPrefix(key, prefix); name != "" {
			out = append(out, name)
		}
	}
	p := s3.NewListObjectsV2Paginator(b.c, &s3.ListObjectsV2Input{
		Bucket: &b.loc.Bucket, Prefix: aws.String(prefix), Delimiter: aws.String("/"),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		each(page, add)
	}
	sort.Strings(out)
	return out, nil
}

var errNotFound = errors.New("ship: object not found")

func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound")
}
