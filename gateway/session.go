package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Roles and browser sessions.
//
// The management API knows two roles: admin (the admin token) may do
// everything, viewer (the --viewer-token, for auditors) may read
// everything and change nothing. A caller proves its role with
// "Authorization: Bearer <token>", or, from the dashboard, with a session
// cookie obtained by exchanging a token at POST /ui/session. A request
// authenticated by the cookie that changes anything (any method other than
// GET and HEAD) must also carry the session's CSRF token in X-CSRF-Token.
// Sessions live in this process's memory (a restart signs everyone out),
// or, in a cluster, in its shared store (Options.Sessions).

// role is what a management caller may do.
type role uint8

const (
	roleNone   role = iota
	roleViewer      // reads only
	roleAdmin       // reads and writes
)

func (r role) String() string {
	switch r {
	case roleAdmin:
		return "admin"
	case roleViewer:
		return "viewer"
	}
	return "none"
}

const (
	sessionCookie = "toolgate_session"
	csrfHeader    = "X-CSRF-Token"
	// DefaultSessionTTL is how long a dashboard session lasts after
	// sign-in when Options.SessionTTL is 0.
	DefaultSessionTTL = 8 * time.Hour
	// maxSessions bounds the sessions held; past it, the one closest to
	// expiry is dropped.
	maxSessions = 1024
)

var (
	errViewerReadOnly  = apiErr(403, "Read-only (viewer) access: changes need the admin token")
	errCSRF            = apiErr(403, "CSRF token missing or invalid: send the session's csrf_token in X-CSRF-Token")
	errNoSession       = apiErr(401, "Not signed in")
	errBadToken        = apiErr(401, "Invalid token")
	errSignInThrottled = apiErr(429, "Too many failed sign-ins from this address; try again in a minute")
)

// signInFailLimit is how many wrong tokens one source address may send to
// POST /ui/session per clock minute before it is refused (429) for the
// rest of that minute; signInMaxSources bounds the addresses tracked (the
// rest share one count).
const (
	signInFailLimit  = 10
	signInMaxSources = 10000
)

// signInLimiter counts failed sign-ins per source (an IPv6 /64 as one) in
// the current minute. With shared (a cluster's Sessions store) the count
// is the cluster's: wrong tokens sent to any node count on all. While the
// shared store does not answer, each node counts on its own (local), so
// that a store outage never lifts the limit. Safe for concurrent use.
type signInLimiter struct {
	shared FailureCounter
	onErr  func(error) // logs a shared store failure

	mu     sync.Mutex
	minute int64
	fails  map[netip.Addr]int
}

func (l *signInLimiter) roll(now time.Time) {
	if m := now.Unix() / 60; m != l.minute || l.fails == nil {
		l.minute, l.fails = m, make(map[netip.Addr]int)
	}
}

// sharedKey is src's count in the shared store for now's clock minute.
func sharedKey(src netip.Addr, now time.Time) string {
	return "signin-fails/" + src.String() + "/" + strconv.FormatInt(now.Unix()/60, 10)
}

func (l *signInLimiter) blocked(src netip.Addr, now time.Time) bool {
	src = sourceKey(src)
	if l.shared != nil {
		n, err := l.shared.Failures(sharedKey(src, now))
		if err == nil && n >= signInFailLimit {
			return true
		}
		if err != nil {
			l.onErr(err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fails[l.slot(src, now)] >= signInFailLimit
}

// slot is src's key in the local counts at now (the shared overflow slot
// once signInMaxSources are tracked). l.mu is held.
func (l *signInLimiter) slot(src netip.Addr, now time.Time) netip.Addr {
	l.roll(now)
	if _, ok := l.fails[src]; !ok && len(l.fails) >= signInMaxSources {
		return netip.IPv4Unspecified()
	}
	return src
}

// failed counts a wrong token; it reports whether the source just reached
// the limit (logged once).
func (l *signInLimiter) failed(src netip.Addr, now time.Time) bool {
	src = sourceKey(src)
	l.mu.Lock()
	k := l.slot(src, now)
	l.fails[k]++
	local := l.fails[k]
	l.mu.Unlock()
	if l.shared != nil {
		n, err := l.shared.CountFailure(sharedKey(src, now), 2*time.Minute)
		if err == nil {
			return n == signInFailLimit
		}
		l.onErr(err)
	}
	return local == signInFailLimit
}

type session struct {
	role    role
	csrf    string
	expires time.Time
}

var errSessionStore = apiErr(503, "Dashboard sessions are unavailable: the cluster's shared store does not answer; sign in again shortly, or call the API with the bearer token")

// sessionBook holds the live sessions by the SHA-256 of their cookie
// value (the value itself is never kept): in this process's memory, or,
// with shared set, in the cluster's store under sessionKeyPrefix and the
// hash's hex (appendValue encodes them). A sign-out there overwrites the
// session with an empty value, which no read takes for a session. A
// shared session also names the token it was granted for (tags), so that
// a changed admin or viewer token ends the sessions opened with the old
// one, as a restart does for sessions in memory. Safe for concurrent use.
type sessionBook struct {
	shared AnswerStore
	tags   [3][8]byte // by role: a digest of the token that grants it
	mu     sync.Mutex
	m      map[[32]byte]*session
}

// tokenTag is what a shared session records of the token it was granted
// for: 8 bytes of a digest of the token's SHA-256.
func tokenTag(tokenHash [32]byte) (t [8]byte) {
	h := sha256.Sum256(append([]byte("toolgate dashboard session\x00"), tokenHash[:]...))
	copy(t[:], h[:])
	return t
}

const sessionKeyPrefix = "session/"

// open starts a session for r and returns its cookie value.
func (b *sessionBook) open(r role, now time.Time, ttl time.Duration) (string, *session, error) {
	id := randomToken()
	s := &session{role: r, csrf: randomToken(), expires: now.Add(ttl)}
	h := sha256.Sum256([]byte(id))
	if b.shared != nil {
		if err := b.shared.PutAnswer(sessionKey(h), s.appendValue(nil, b.tags[r]), ttl); err != nil {
			return "", nil, err
		}
		return id, s, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[[32]byte]*session)
	}
	if len(b.m) >= maxSessions {
		var soonest [32]byte
		var at time.Time
		for k, v := range b.m {
			if !v.expires.After(now) {
				delete(b.m, k)
				continue
			}
			if at.IsZero() || v.expires.Before(at) {
				soonest, at = k, v.expires
			}
		}
		if len(b.m) >= maxSessions {
			delete(b.m, soonest)
		}
	}
	b.m[h] = s
	return id, s, nil
}

// get returns the live session of a cookie value, or nil.
func (b *sessionBook) get(id []byte, now time.Time) (*session, error) {
	h := sha256.Sum256(id)
	if b.shared != nil {
		v, ok, err := b.shared.GetAnswer(sessionKey(h))
		if err != nil || !ok {
			return nil, err
		}
		s, tag, ok := decodeSession(v)
		if !ok || !s.expires.After(now) || subtle.ConstantTimeCompare(tag[:], b.tags[s.role][:]) != 1 {
			return nil, nil // signed out, expired, granted by a token no longer in use, or not a session's value
		}
		return s, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.m[h]
	if !ok {
		return nil, nil
	}
	if !s.expires.After(now) {
		delete(b.m, h)
		return nil, nil
	}
	return s, nil
}

func (b *sessionBook) close(id []byte) error {
	h := sha256.Sum256(id)
	if b.shared != nil {
		return b.shared.PutAnswer(sessionKey(h), nil, time.Minute)
	}
	b.mu.Lock()
	delete(b.m, h)
	b.mu.Unlock()
	return nil
}

func sessionKey(h [32]byte) string { return sessionKeyPrefix + hex.EncodeToString(h[:]) }

// A shared session's value: version 1, the role, the granting token's
// tag, the expiry (Unix ns, big-endian) and the CSRF token.
const sessionValueV1 = 1

func (s *session) appendValue(b []byte, tag [8]byte) []byte {
	b = append(b, sessionValueV1, byte(s.role))
	b = append(b, tag[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.expires.UnixNano()))
	return append(b, s.csrf...)
}

func decodeSession(v []byte) (s *session, tag [8]byte, ok bool) {
	if len(v) < 18 || v[0] != sessionValueV1 || (role(v[1]) != roleViewer && role(v[1]) != roleAdmin) {
		return nil, tag, false
	}
	copy(tag[:], v[2:10])
	return &session{
		role:    role(v[1]),
		expires: time.Unix(0, int64(binary.BigEndian.Uint64(v[10:18]))),
		csrf:    string(v[18:]),
	}, tag, true
}

// randomToken is 256 bits from crypto/rand, base64url.
func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// tokenRole is the role a bearer token grants, compared in constant time
// over SHA-256 digests (so that length is not leaked either).
func (g *Gateway) tokenRole(tok []byte) role {
	h := sha256.Sum256(bytes.TrimSpace(tok))
	if subtle.ConstantTimeCompare(h[:], g.adminHash[:]) == 1 {
		return roleAdmin
	}
	if g.opts.ViewerToken != "" && subtle.ConstantTimeCompare(h[:], g.viewerHash[:]) == 1 {
		return roleViewer
	}
	return roleNone
}

// safeMethod: a request that changes nothing.
func safeMethod(ctx *fasthttp.RequestCtx) bool { return ctx.IsGet() || ctx.IsHead() }

// roleOf returns the role a management request proves: by a bearer token,
// else by a session cookie (which, for a state-changing request, must come
// with its CSRF token: a refusal otherwise).
func (g *Gateway) roleOf(ctx *fasthttp.RequestCtx) (role, *Decision) {
	if tok, ok := bytes.CutPrefix(ctx.Request.Header.Peek("Authorization"), []byte("Bearer ")); ok {
		return g.tokenRole(tok), nil
	}
	s, _, err := g.sessionOf(ctx)
	if err != nil {
		return roleNone, errSessionStore
	}
	if s == nil {
		return roleNone, nil
	}
	if !safeMethod(ctx) {
		got := ctx.Request.Header.Peek(csrfHeader)
		if subtle.ConstantTimeCompare(got, []byte(s.csrf)) != 1 {
			return roleNone, errCSRF
		}
	}
	return s.role, nil
}

// sessionOf returns the live session the request's cookie names (nil when
// none), the cookie's value, and the shared store's failure.
func (g *Gateway) sessionOf(ctx *fasthttp.RequestCtx) (*session, []byte, error) {
	id := ctx.Request.Header.Cookie(sessionCookie)
	if len(id) == 0 {
		return nil, nil, nil
	}
	s, err := g.sessions.get(id, g.now())
	if err != nil {
		g.log.Warn("dashboard session store", "err", err)
	}
	return s, id, err
}

// canRead reports whether the request may read management data (admin
// or viewer).
func (g *Gateway) canRead(ctx *fasthttp.RequestCtx) bool {
	r, d := g.roleOf(ctx)
	return d == nil && r >= roleViewer
}

// secureCookies: cookies are marked Secure when the request came over
// TLS (directly or through a trusted proxy) or the gateway's public URL
// is https.
func (g *Gateway) secureCookies(ctx *fasthttp.RequestCtx) bool {
	return g.opts.SecureCookies || g.viaTLS(ctx)
}

func (g *Gateway) setSessionCookie(ctx *fasthttp.RequestCtx, value string, maxAge time.Duration) {
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(sessionCookie)
	c.SetValue(value)
	c.SetPath("/")
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	c.SetSecure(g.secureCookies(ctx))
	if maxAge <= 0 {
		c.SetMaxAge(-1) // Max-Age=0: delete
		c.SetExpire(fasthttp.CookieExpireDelete)
	} else {
		c.SetMaxAge(int(maxAge / time.Second))
	}
	ctx.Response.Header.SetCookie(c)
}

type sessionView struct {
	Role      string    `json:"role"`
	CSRFToken string    `json:"csrf_token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// apiSession serves /ui/session: POST {"token": …} signs in (the admin or
// viewer token, in the body, never the URL) and sets the session cookie;
// GET tells the page its role and CSRF token; DELETE signs out.
func (g *Gateway) apiSession(ctx *fasthttp.RequestCtx) (any, *Decision) {
	now := g.now()
	if len(ctx.URI().QueryString()) > 0 {
		return nil, badRequest("No query parameters: a token goes in the request body, never in a URL")
	}
	switch string(ctx.Method()) {
	case "POST":
		// A cross-site form cannot send JSON without a CORS preflight,
		// which the gateway never grants: no sign-in from another site.
		if !bytes.HasPrefix(ctx.Request.Header.ContentType(), []byte("application/json")) {
			return nil, apiErr(415, "Content-Type must be application/json")
		}
		f, aerr := readObject(ctx, false)
		if aerr != nil {
			return nil, aerr
		}
		var tok string
		raw, ok := f["token"]
		if !ok || json.Unmarshal(raw, &tok) != nil || tok == "" || len(f) != 1 {
			return nil, badRequest(`Request body must be {"token": "<admin or viewer token>"}`)
		}
		src := g.clientAddr(ctx)
		if g.signInFails.blocked(src, now) {
			ctx.Response.Header.Set("Retry-After", "60")
			return nil, errSignInThrottled
		}
		r := g.tokenRole([]byte(tok))
		if r == roleNone {
			if g.signInFails.failed(src, now) {
				g.log.Warn("dashboard sign-ins refused: too many wrong tokens, throttled for the minute", "source", sourceString(src))
			}
			return nil, errBadToken
		}
		ttl := g.opts.SessionTTL
		if ttl <= 0 {
			ttl = DefaultSessionTTL
		}
		if _, old, _ := g.sessionOf(ctx); old != nil {
			// No session fixation: a sign-in always gets a fresh id. A
			// failure to close the old one fails the open just below.
			g.sessions.close(old)
		}
		id, s, err := g.sessions.open(r, now, ttl)
		if err != nil {
			g.log.Warn("dashboard session store", "err", err)
			return nil, errSessionStore
		}
		g.setSessionCookie(ctx, id, ttl)
		return sessionView{Role: r.String(), CSRFToken: s.csrf, ExpiresAt: s.expires.UTC()}, nil
	case "GET":
		s, _, err := g.sessionOf(ctx)
		if err != nil {
			return nil, errSessionStore
		}
		if s == nil {
			return nil, errNoSession
		}
		return sessionView{Role: s.role.String(), CSRFToken: s.csrf, ExpiresAt: s.expires.UTC()}, nil
	case "DELETE":
		s, id, err := g.sessionOf(ctx)
		if err != nil {
			return nil, errSessionStore
		}
		if s == nil {
			return nil, errNoSession
		}
		if subtle.ConstantTimeCompare(ctx.Request.Header.Peek(csrfHeader), []byte(s.csrf)) != 1 {
			return nil, errCSRF
		}
		if err := g.sessions.close(id); err != nil {
			g.log.Warn("dashboard session store", "err", err)
			return nil, errSessionStore
		}
		g.setSessionCookie(ctx, "", 0)
		return map[string]bool{"signed_out": true}, nil
	}
	return nil, errBadMethod
}
