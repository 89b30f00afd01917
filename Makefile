# handover build. `make help` lists the targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
PKG     := github.com/handover/handover/agent
LDFLAGS := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT)
GOBUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build test demo lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## static binaries under bin/: handover (production) and handover-sim (the simulated region)
	$(GOBUILD) -o bin/handover ./cmd/handover
	@if [ -f cmd/handover-sim/main.go ]; then $(GOBUILD) -o bin/handover-sim ./cmd/handover-sim; fi

test: ## the test suite, as README.md and CI run it
	bash scripts/test.sh

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
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch go build -tags lambda.norpc -trimpath -ldflags "$(LDFLAGS)" \
			-o dist/lambda-$$arch/bootstrap ./cmd/handover-failover || exit 1; \
		go run ./scripts/lambdazip -o dist/handover-failover-$$arch.zip dist/lambda-$$arch/bootstrap || exit 1; \
	done
