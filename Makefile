# idle-worker. `make run` starts the worker (embedded NATS on 127.0.0.1:4222);
# `make test` is the test command the README and .ci/run use; `make help`
# lists the targets (each documented by its `## ` comment).

GO      ?= go
VERSION ?= 0.1.0
BIN     := bin/idle-worker
# The Dockerfile runs `make build`, so the image is built exactly this way.
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS    := ./...
FUZZTIME ?= 10s

.PHONY: help build run test bench fmt lint check-imports fuzz clean

help: ## list the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## build a static bin/idle-worker
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/idle-worker

run: build ## build and run the worker, with an embedded NATS on 127.0.0.1:4222
	./$(BIN)

test: lint ## gofmt check, go vet, coordinator import check, then every test with -race, shuffled
	$(GO) test -race -count=1 -shuffle on -timeout 20m $(PKGS)

# Go benchmarks (allocs/op of the heartbeat path must be 0: no -race here),
# then the end-to-end measurements against an embedded nats-server and, in
# its process section, the binary that `build` made; the table is printed
# and written as JSON to BENCH_OUT.
BENCH_OUT ?= bench-results.json
bench: build ## Go benchmarks, then the end-to-end measurements (JSON to BENCH_OUT)
	$(GO) test -run '^$$' -bench . -benchmem ./coordinator ./bus ./partition
	$(GO) run ./cmd/idle-bench -out $(BENCH_OUT)

fmt: ## rewrite the formatting of every Go file
	gofmt -w $$(git ls-files '*.go')

lint: check-imports ## check formatting, go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# The coordinator must stay a pure model: standard library only, no I/O,
# no sync, no goroutines; and github.com/google/btree, the pure data
# structure of its key index.
check-imports: ## check that coordinator imports only what it may
	@bad=$$($(GO) list -f '{{join .Imports "\n"}}' ./coordinator | grep -Ev '^(errors|fmt|math|slices|sort|maps|strings|time|container/.*|github\.com/google/btree)$$' || true); \
	if [ -n "$$bad" ]; then echo "coordinator imports more than it may: $$bad"; exit 1; fi

# Each fuzzer for FUZZTIME; the seed corpora in testdata/ run in `make test`.
fuzz: ## run each fuzzer for FUZZTIME
	@for pkg in ./bus ./coordinator ./member ./partition; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean: ## remove bin/
	rm -rf bin
