package x402

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"

	"github.com/toolgate/toolgate/money"
)

// MaxDescription is the longest resource description emitted, in
// characters; CDP refuses longer ones (x402-notes.md §6.3).
const MaxDescription = 500

// Resource describes one priced tool endpoint.
type Resource struct {
	ToolID      string
	Path        string // route path, e.g. "/tools/extract/structured"
	Method      string // default "POST"
	Description string // truncated to MaxDescription characters
	Price       money.Micros
	// MaxTimeoutSeconds bounds validBefore − now for the client; default 60.
	// It must cover handler time plus settlement.
	MaxTimeoutSeconds int
	MimeType          string // default "application/json"
	// Discovery is the catalog's optional `discovery` block:
	//   {"input": <example body, or query params for GET/HEAD/DELETE>,
	//    "input_schema": <JSON Schema of that body or query object>,
	//    "output": <example response>, "body_type": "json"|"form-data"|"text"}
	// ("inputSchema" and "bodyType" are accepted as aliases.)
	Discovery json.RawMessage
	// Metered: Price is the most a call costs and the actual cost is known
	// after the call; with Config.UptoFacilitator set, the offer also
	// accepts the upto scheme (first), settled at the actual cost.
	Metered bool
	// MCPPath is the path of the gateway's MCP endpoint ("/mcp"), where
	// the tool is also callable with tools/call; "" when there is none.
	// The tool is then also listed and offered as an MCP resource.
	MCPPath string
}

// Offer is the precomputed payment offer of one tool: its requirements in
// both protocol versions, its 402 bytes and its EIP-712 domain separator.
// An Offer is immutable after NewOffer and safe for concurrent use; byte
// slices it returns are shared and must not be modified.
type Offer struct {
	cfg         Config
	res         Resource
	chainID     uint64
	domain      common.Hash
	resourceURL string
	assetHex    string // checksummed
	payToHex    string // checksummed
	amount      string // price in atomic units
	v1Network   string // "" when the legacy client cannot use this network

	reqV2, reqV1   []byte // one requirements object, compact JSON
	reqUpto        []byte // the upto requirements (metered tools with Config.UptoFacilitator), else nil
	accepts        []byte // the v2 accepts entries: reqUpto (if any), reqV2
	permit2Domain  common.Hash
	prHead, prTail []byte // v2 PaymentRequired around the error string
	header         []byte // base64 PaymentRequired, error "Payment required"
	body402        []byte // v1 body
	bazaar         []byte // extensions.bazaar declaration
	bazaarInfo     []byte // its info object, for discovery listings
	mcpBazaar      []byte // extensions.bazaar declaration as an MCP tool (nil without MCPPath)
	mcpBazaarInfo  []byte // its info object
	mcpPrTail      []byte // MCP PaymentRequired after the error string
}

// NewOffer validates cfg (filling its defaults) and res, and precomputes
// everything that does not change per request. Errors wrap ErrConfig.
func NewOffer(cfg Config, res Resource) (*Offer, error) {
	var probs []string
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if res.Method == "" {
		res.Method = "POST"
	}
	res.Method = strings.ToUpper(res.Method)
	if res.MimeType == "" {
		res.MimeType = "application/json"
	}
	if res.MaxTimeoutSeconds == 0 {
		res.MaxTimeoutSeconds = 60
	}
	if res.MaxTimeoutSeconds < 0 {
		probs = append(probs, fmt.Sprintf("max_timeout_seconds: %d is negative", res.MaxTimeoutSeconds))
	}
	if res.Price <= 0 {
		probs = append(probs, fmt.Sprintf("price: %d micros; an offer needs a positive price", res.Price))
	}
	if !strings.HasPrefix(res.Path, "/") {
		probs = append(probs, fmt.Sprintf("path: %q must start with /", res.Path))
	}
	res.Description = truncateRunes(res.Description, MaxDescription)

	o := &Offer{cfg: cfg, res: res}
	o.chainID, _ = ParseNetwork(cfg.Network)
	o.domain = DomainSeparator(cfg.AssetName, cfg.AssetVersion, o.chainID, cfg.Asset)
	o.resourceURL = cfg.PublicURL + res.Path
	o.assetHex = cfg.Asset.Hex()
	o.payToHex = cfg.PayTo.Hex()
	o.amount = strconv.FormatInt(int64(res.Price), 10)
	if name, ok := V1Network(o.chainID); ok {
		o.v1Network = name
	}
	bz, v1Out, err := buildBazaar(res)
	if err != nil {
		probs = append(probs, err.Error())
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("%w: tool %q: %s", ErrConfig, res.ToolID, strings.Join(probs, "; "))
	}
	o.bazaar = bz
	var parts struct{ Info json.RawMessage }
	_ = json.Unmarshal(bz, &parts)
	o.bazaarInfo = parts.Info
	if o.mcpBazaar, err = buildMCPBazaar(res); err != nil {
		return nil, fmt.Errorf("%w: tool %q: %s", ErrConfig, res.ToolID, err)
	}
	if o.mcpBazaar != nil {
		var mp struct{ Info json.RawMessage }
		_ = json.Unmarshal(o.mcpBazaar, &mp)
		o.mcpBazaarInfo = mp.Info
	}

	extra, _ := json.Marshal(struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}{cfg.AssetName, cfg.AssetVersion})

	o.reqV2 = mustJSON(Requirements{
		Scheme: SchemeExact, Network: cfg.Network, Amount: o.amount,
		Asset: o.assetHex, PayTo: o.payToHex,
		MaxTimeoutSeconds: res.MaxTimeoutSeconds, Extra: extra,
	})
	o.accepts = o.reqV2
	if res.Metered && cfg.UptoFacilitator != (common.Address{}) {
		o.permit2Domain = Permit2DomainSeparator(o.chainID)
		o.reqUpto = o.uptoRequirements(o.amount)
		o.accepts = append(append(append([]byte(nil), o.reqUpto...), ','), o.reqV2...)
	}
	if o.v1Network != "" {
		o.reqV1 = mustJSON(RequirementsV1{
			Scheme: SchemeExact, Network: o.v1Network, MaxAmountRequired: o.amount,
			Resource: o.resourceURL, Description: res.Description, MimeType: res.MimeType,
			OutputSchema: v1Out, PayTo: o.payToHex, MaxTimeoutSeconds: res.MaxTimeoutSeconds,
			Asset: o.assetHex, Extra: extra,
		})
	}

	resInfo := mustJSON(ResourceInfo{URL: o.resourceURL, Description: res.Description, MimeType: res.MimeType})
	o.prHead = []byte(`{"x402Version":2,"error":`)
	tail := make([]byte, 0, 256+len(resInfo)+len(o.accepts)+len(bz)+len(paymentIdentifierDecl))
	tail = append(tail, `,"resource":`...)
	tail = append(tail, resInfo...)
	tail = append(tail, `,"accepts":[`...)
	tail = append(tail, o.accepts...)
	tail = append(tail, `],"extensions":{"bazaar":`...)
	tail = append(tail, bz...)
	tail = append(tail, `,"`+ExtPaymentIdentifier+`":`...)
	tail = append(tail, paymentIdentifierDecl...)
	tail = append(tail, "}}"...)
	o.prTail = tail
	if o.mcpBazaar != nil {
		o.mcpPrTail = o.mcpPaymentRequiredTail()
	}
	o.header, o.body402 = o.build(defaultPaymentRequired, defaultV1PaymentMissing)
	return o, nil
}

// ToolID returns the tool the offer prices.
func (o *Offer) ToolID() string { return o.res.ToolID }

// Resource returns the offer's resource with defaults applied and the
// description truncated.
func (o *Offer) Resource() Resource { return o.res }

// Config returns the validated configuration the offer was built from.
func (o *Offer) Config() Config { return o.cfg }

// ChainID returns the EVM chain ID of the offer's network.
func (o *Offer) ChainID() uint64 { return o.chainID }

// DomainSeparator returns the cached EIP-712 domain separator of the asset.
func (o *Offer) DomainSeparator() common.Hash { return o.domain }

// ResourceURL returns the public URL of the tool.
func (o *Offer) ResourceURL() string { return o.resourceURL }

// Network returns the network name in the naming of protocol version v
// (CAIP-2 for 2, legacy name for 1; "" when v1 is unavailable).
func (o *Offer) Network(v int) string {
	if v == 1 {
		return o.v1Network
	}
	return o.cfg.Network
}

// Requirements returns the offer's exact-scheme requirements object in
// version v's shape (compact JSON), as sent to a facilitator; nil for v1
// when the network has no legacy name.
func (o *Offer) Requirements(v int) []byte {
	if v == 1 {
		return o.reqV1
	}
	return o.reqV2
}

// RequirementsFor returns the requirements object that p pays against, as
// sent to a facilitator: the upto one for an upto payment (nil when the
// offer has none), else Requirements(p.Version).
func (o *Offer) RequirementsFor(p *Payment) []byte {
	if p.Scheme == SchemeUpto {
		return o.reqUpto
	}
	return o.Requirements(p.Version)
}

// Upto reports whether the offer accepts the upto scheme.
func (o *Offer) Upto() bool { return o.reqUpto != nil }

// Settling returns a copy of the offer whose upto requirements carry
// amount, the actual cost to settle (at most the price), as the upto
// scheme's settle request does (its amount is the maximum at verification
// and the actual charge at settlement). Other requirements are unchanged.
func (o *Offer) Settling(amount money.Micros) *Offer {
	if o.reqUpto == nil {
		return o
	}
	c := *o
	c.reqUpto = o.uptoRequirements(strconv.FormatInt(int64(amount), 10))
	return &c
}

// uptoRequirements is the upto requirements object with amount (atomic
// units): the asset's EIP-712 domain, the Permit2 transfer method and the
// facilitator the payer must name in its witness.
func (o *Offer) uptoRequirements(amount string) []byte {
	extra := mustJSON(struct {
		Name                string `json:"name"`
		Version             string `json:"version"`
		AssetTransferMethod string `json:"assetTransferMethod"`
		FacilitatorAddress  string `json:"facilitatorAddress"`
	}{o.cfg.AssetName, o.cfg.AssetVersion, "permit2", o.cfg.UptoFacilitator.Hex()})
	return mustJSON(Requirements{
		Scheme: SchemeUpto, Network: o.cfg.Network, Amount: amount,
		Asset: o.assetHex, PayTo: o.payToHex,
		MaxTimeoutSeconds: o.res.MaxTimeoutSeconds, Extra: extra,
	})
}

// BazaarDeclaration returns the compact extensions.bazaar object
// ({"info":…,"schema":…}) carried in PAYMENT-REQUIRED.
func (o *Offer) BazaarDeclaration() []byte { return o.bazaar }

// PaymentRequiredHeader returns the base64 value of the PAYMENT-REQUIRED
// header, with error "Payment required".
func (o *Offer) PaymentRequiredHeader() []byte { return o.header }

// Body402 returns the JSON body of a 402 for legacy v1 clients:
// {"x402Version":1,"error":"X-PAYMENT header is required","accepts":[…]}.
// accepts is empty when the network has no legacy v1 name.
func (o *Offer) Body402() []byte { return o.body402 }

// WithError returns a fresh PAYMENT-REQUIRED header value and v1 body that
// carry reason as their `error`. It costs one JSON string encoding and one
// base64 encoding; reason "" gives the defaults.
func (o *Offer) WithError(reason string) (header, body []byte) {
	if reason == "" {
		return o.header, o.body402
	}
	return o.build(reason, reason)
}

func (o *Offer) build(v2Err, v1Err string) (header, body []byte) {
	q2, _ := json.Marshal(v2Err)
	raw := make([]byte, 0, len(o.prHead)+len(q2)+len(o.prTail))
	raw = append(append(append(raw, o.prHead...), q2...), o.prTail...)
	header = make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(header, raw)

	q1, _ := json.Marshal(v1Err)
	body = make([]byte, 0, 64+len(q1)+len(o.reqV1))
	body = append(body, `{"x402Version":1,"error":`...)
	body = append(body, q1...)
	body = append(body, `,"accepts":[`...)
	body = append(body, o.reqV1...)
	body = append(body, "]}"...)
	return header, body
}

// discoveryBlock is the catalog's `discovery` block (see Resource).
type discoveryBlock struct {
	Input        json.RawMessage `json:"input"`
	InputSchema  json.RawMessage `json:"input_schema"`
	InputSchema2 json.RawMessage `json:"inputSchema"`
	Output       json.RawMessage `json:"output"`
	BodyType     string          `json:"body_type"`
	BodyType2    string          `json:"bodyType"`
}

func isQueryMethod(m string) bool { return m == "GET" || m == "HEAD" || m == "DELETE" }

// buildBazaar returns the compact extensions.bazaar declaration and the v1
// outputSchema for res.
func buildBazaar(res Resource) (decl, v1Out []byte, err error) {
	var d discoveryBlock
	if len(bytes.TrimSpace(res.Discovery)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(res.Discovery))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return nil, nil, fmt.Errorf("discovery: %v", err)
		}
	}
	if len(d.InputSchema) == 0 {
		d.InputSchema = d.InputSchema2
	}
	if d.BodyType == "" {
		d.BodyType = d.BodyType2
	}
	if d.BodyType == "" {
		d.BodyType = "json"
	}
	switch d.BodyType {
	case "json", "form-data", "text":
	default:
		return nil, nil, fmt.Errorf("discovery.body_type: %q is not json, form-data or text", d.BodyType)
	}
	for name, raw := range map[string]json.RawMessage{"input": d.Input, "input_schema": d.InputSchema, "output": d.Output} {
		if len(raw) > 0 && !json.Valid(raw) {
			return nil, nil, fmt.Errorf("discovery.%s: invalid JSON", name)
		}
	}
	if len(d.InputSchema) > 0 && !isJSONObject(d.InputSchema) {
		return nil, nil, fmt.Errorf("discovery.input_schema: must be a JSON object")
	}
	obj := json.RawMessage(`{"type":"object"}`)
	schemaIn := d.InputSchema
	if len(schemaIn) == 0 {
		schemaIn = obj
	}
	method := mustJSON(res.Method)

	var in, inSchema bytes.Buffer
	in.WriteString(`{"type":"http","method":`)
	in.Write(method)
	inSchema.WriteString(`{"type":"object","properties":{"type":{"type":"string","const":"http"},"method":{"type":"string","enum":[`)
	inSchema.Write(method)
	inSchema.WriteString(`]}`)
	if isQueryMethod(res.Method) {
		if len(d.Input) > 0 {
			in.WriteString(`,"queryParams":`)
			in.Write(d.Input)
		}
		inSchema.WriteString(`,"queryParams":`)
		inSchema.Write(schemaIn)
		inSchema.WriteString(`},"required":["type","method"],"additionalProperties":false}`)
	} else {
		body := d.Input
		if len(body) == 0 {
			body = json.RawMessage(`{}`)
		}
		in.WriteString(`,"bodyType":`)
		in.Write(mustJSON(d.BodyType))
		in.WriteString(`,"body":`)
		in.Write(body)
		inSchema.WriteString(`,"bodyType":{"type":"string","enum":["json","form-data","text"]},"body":`)
		inSchema.Write(schemaIn)
		inSchema.WriteString(`},"required":["type","method","bodyType","body"],"additionalProperties":false}`)
	}
	in.WriteByte('}')

	var out []byte
	if len(d.Output) > 0 {
		out = append(append([]byte(`{"type":"json","example":`), d.Output...), '}')
	}

	var b bytes.Buffer
	b.WriteString(`{"info":{"input":`)
	b.Write(in.Bytes())
	if out != nil {
		b.WriteString(`,"output":`)
		b.Write(out)
	}
	b.WriteString(`},"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"input":`)
	b.Write(inSchema.Bytes())
	b.WriteString(`,"output":{"type":"object","properties":{"type":{"type":"string"}},"required":["type"]}},"required":["input"]}}`)
	var c bytes.Buffer
	if err := json.Compact(&c, b.Bytes()); err != nil {
		return nil, nil, fmt.Errorf("discovery: %v", err)
	}

	// v1 (legacy Bazaar): accepts[].outputSchema = {input:{type,method,discoverable}, output}
	var v1 bytes.Buffer
	v1.WriteString(`{"input":{"type":"http","method":`)
	v1.Write(method)
	v1.WriteString(`,"discoverable":true`)
	if !isQueryMethod(res.Method) {
		v1.WriteString(`,"bodyType":`)
		v1.Write(mustJSON(d.BodyType))
	}
	v1.WriteString(`}`)
	if len(d.Output) > 0 {
		v1.WriteString(`,"output":`)
		v1.Write(d.Output)
	}
	v1.WriteByte('}')
	var c1 bytes.Buffer
	if err := json.Compact(&c1, v1.Bytes()); err != nil {
		return nil, nil, fmt.Errorf("discovery: %v", err)
	}
	return c.Bytes(), c1.Bytes(), nil
}

func isJSONObject(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("x402: marshal " + err.Error())
	}
	return b
}

// truncateRunes cuts s to at most n characters on a rune boundary.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for k := range s {
		if i == n {
			return strings.TrimRightFunc(s[:k], func(r rune) bool { return r == ' ' })
		}
		i++
	}
	return s
}
