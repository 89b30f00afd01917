# handover build. `make help` lists the targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
PKG     := github.com/handover/handover/agent
LDFLAGS := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT)
# No inlining in the AWS SDK and in handover's own packages: 640 KB less binary (BENCHMARKS.md, footprint)
# for code that waits on the network, not on the CPU; the runtime and the standard library keep theirs.
GCFLAGS := -gcflags=github.com/aws/...=-l -gcflags=github.com/handover/handover/...=-l
GOBUILD := CGO_ENABLED=0 go build -trimpath $(GCFLAGS) -ldflags "$(LDFLAGS)"
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build test fuzz demo lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## static binaries under bin/: handover (production) and handover-sim (the simulated region)
	$(GOBUILD) -o bin/handover ./cmd/handover
	@if [ -f cmd/handover-sim/main.go ]; then $(GOBUILD) -o bin/handover-sim ./cmd/handover-sim; fi

test: ## the test suite, as README.md and CI run it
	bash scripts/test.sh

fuzz: ## every fuzz target for FUZZTIME each (default 10s), one after another
	bash scripts/fuzz.sh

demo: ## the full story in the simulated region, with the real agent code (run as root)
	bash scripts/demo.sh

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	$(STATICCHECK) ./...

clean: ## remove build output
	rm -rf bin dist

.PHONY: lambda
LAMBDA_ARCHES := amd64 arm64

lambda: ## the failover Lambda: dist/handover-failover-{amd64,arm64}.zip, bootstrap at the root (provided.al2023)
	@for arch in $(LAMBDA_ARCHES); do \
		echo "building dist/handover-failover-$$arch.zip"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch go build -tags lambda.norpc -trimpath $(GCFLAGS) -ldflags "$(LDFLAGS)" \
			-o dist/lambda-$$arch/bootstrap ./cmd/handover-failover || exit 1; \
		go run ./scripts/lambdazip -o dist/handover-failover-$$arch.zip dist/lambda-$$arch/bootstrap || exit 1; \
	done

.PHONY: packages
PKG_ARCHES := amd64 arm64
NFPM := go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
# The package version: the tag without its v (1.2.3), past a tag with the distance joined by dots
# (1.2.3.4.gabcdef0, which sorts above 1.2.3), and 0.0.0~gitCOMMIT without a tag (sorts below 0.0.0).
PKG_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null); \
	if [ -n "$$v" ]; then echo "$${v#v}" | tr - .; else echo "0.0.0~git$(COMMIT)"; fi)
# The man page's date: the last commit's, so that the same commit builds the same page.
MAN_DATE := $(shell git log -1 --format=%cs 2>/dev/null || echo unknown)

packages: ## dist/handover_*_{amd64,arm64}.deb and dist/handover-*.{x86_64,aarch64}.rpm (nfpm; binary, units, config, man page)
	@mkdir -p dist/pkg && rm -f dist/handover_*.deb dist/handover-*.rpm
	go run ./scripts/manpage -check-env packaging/default/handover
	go run ./scripts/manpage -version $(VERSION) -date $(MAN_DATE) -o dist/pkg/handover.1
	gzip -n -9 -f dist/pkg/handover.1
	@for arch in $(PKG_ARCHES); do \
		echo "building the $$arch packages ($(PKG_VERSION))"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch go build -trimpath $(GCFLAGS) -ldflags "$(LDFLAGS)" -o dist/pkg/handover ./cmd/handover || exit 1; \
		for fmt in deb rpm; do \
			ARCH=$$arch PKG_VERSION=$(PKG_VERSION) $(NFPM) package --config packaging/nfpm.yaml --packager $$fmt --target dist/ || exit 1; \
		done; \
	done
