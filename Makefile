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

# Packages with goroutines, locks or parallel I/O also run under the race detector.
RACE_PKGS := ./internal/... ./convert/... ./pack/... ./requant/... ./hfconv/...

test: vet ## vet + all tests, the concurrent packages again under -race, the CUDA kernels through NVRTC alone (what CI runs)
	$(GO) test -count=1 ./...
	$(GO) test -race -count=1 $(RACE_PKGS)
	sh tools/nvrtc/compile-check.sh

demo: build ## synthesize the tiny model, extract -> pack-experts -> verify -> requant -> run
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN) synth --preset tiny -o $(DEMO)/hf
	$(BIN) extract $(DEMO)/hf -o $(DEMO)/model
	$(BIN) pack-experts $(DEMO)/hf --bits 4 -o $(DEMO)/model/packed_experts
	$(BIN) verify $(DEMO)/model/packed_experts
	$(BIN) requant --to 2bit $(DEMO)/model/packed_experts -o $(DEMO)/model/packed_experts_2bit
	$(BIN) verify $(DEMO)/model/packed_experts_2bit
	$(BIN) run --model $(DEMO)/model --prompt "The capital of France is" --tokens 16 --timing
	$(BIN) run --model $(DEMO)/model --2bit --prompt "The capital of France is" --tokens 16

clean: ## remove build and demo outputs
	rm -rf bin out

# bench-matvec (kernels engineer): quantized matvec vs memcpy bandwidth, same
# runs interleaved, medians and ratios (quant/benchratio.awk).
BENCH_RUNS ?= 3
BENCH_TIME ?= 1s
.PHONY: bench-matvec
bench-matvec: ## CPU quantized matvec bandwidth vs memcpy (quant/)
	@mkdir -p out
	$(GO) test -c -o out/quant.test ./quant/
	@rm -f out/bench-matvec.txt
	@for i in $$(seq $(BENCH_RUNS)); do \
		out/quant.test -test.run '^$$' -test.bench '^Benchmark(MatVec[248]|Memcpy|MatMul4|MatVec4Hot)$$' \
			-test.benchtime $(BENCH_TIME) | tee -a out/bench-matvec.txt | grep -E '^Benchmark' ; \
	done
	@awk -f quant/benchratio.awk out/bench-matvec.txt

# bench-cuda (CUDA engineer): builds the static CUDA test binary here; runs
# tools/bench/cuda.sh when a GPU is present (on the GPU machine, carry .devbin).
.PHONY: bench-cuda
bench-cuda: ## CUDA bandwidth ceilings, fused matmul and MoE-layer benchmarks (cuda/)
	@mkdir -p .devbin
	CGO_ENABLED=0 $(GO) test -c -o .devbin/cuda.test ./cuda/
	CGO_ENABLED=0 $(GO) test -c -o .devbin/runtime.test ./runtime/
	CGO_ENABLED=0 $(GO) build -o .devbin/fmoe ./cmd/fmoe
	@if nvidia-smi >/dev/null 2>&1; then sh tools/bench/cuda.sh; \
	else echo "no GPU here: on the GPU machine run: sh tools/bench/cuda.sh (with .devbin carried)"; fi

# bench-requant (requant engineer): fmoe requant vs cp (and flash-moe's
# repack_experts_2bit.py where numpy exists) on 64 experts at the 397B shape.
.PHONY: bench-requant
bench-requant: ## fmoe requant experts/s and GB/s vs cp and flash-moe's script
	tools/bench/requant.sh

# bench-convert (toolkit engineer): extract and pack-experts GB/s and peak RSS on a
# synthetic checkpoint with full-size experts (397b-shape, 2 layers x 64 experts),
# beside cp of the same bytes on the same disk in the same run.
.PHONY: bench-convert
bench-convert: build ## fmoe extract / pack-experts / verify GB/s and peak RSS vs cp
	tools/bench/convert.sh $(BIN)

.PHONY: bench-hfconv
bench-hfconv: ## HF BF16 release -> 4-bit: conversion GB/s per core and all cores vs disk read, end to end + peak RSS
	tools/bench/hfconv.sh
