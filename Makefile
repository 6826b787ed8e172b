# toolgate — the two commands of the README, and a few more.
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: run test build release bench bench-e2e

run: ## run the gateway with the repo's policies.json and tools.json
	$(GO) run ./cmd/toolgate serve

test: ## every test: vet, go test -race, fuzz briefly, e2e (installs npm deps and anvil)
	scripts/test.sh

build:
	$(GO) build -o bin/toolgate ./cmd/toolgate

release: ## cgo on: libsecp256k1 for fast signature recovery
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/toolgate ./cmd/toolgate

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=5 ./... | tee bench.txt

bench-e2e: ## end-to-end benchmarks with wrk and nginx (about 6 min); writes bench/results/<date>.md
	bench/run.sh
