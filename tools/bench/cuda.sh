#!/bin/sh
# CUDA benchmarks (run on the GPU machine; the test binary is built elsewhere
# with `make bench-cuda` or CGO_ENABLED=0 go test -c -o .devbin/cuda.test ./cuda/).
# Prints the GPU, the date, then: HBM device-to-device copy and pinned
# host-to-device copy bandwidth (the floors' denominators), the fused 4-bit
# matmul (16384x4096, T=1/8/64) and one MoE layer of the 397B shape at K=4
# and K=10, experts resident or in a 16-expert GPU cache fed from host memory.
set -e
BIN=${BIN:-.devbin/cuda.test}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
date -u +%Y-%m-%dT%H:%MZ
cd "$(dirname "$BIN")"
"./$(basename "$BIN")" -test.run '^$' -test.bench "${BENCH:-.}" -test.benchtime "${BENCHTIME:-3x}"
