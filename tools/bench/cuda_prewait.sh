#!/bin/sh
# Where ptxas put the decode kernels' weight loads relative to their
# griddepcontrol.wait, run ON the GPU machine (needs cuobjdump from the CUDA
# toolkit) after any fmoe run on CUDA has compiled and cached the kernels
# (os.UserCacheDir()/fmoe/cuda, or CUBIN_DIR). For each kernel: how many
# read-only (weight) loads, LDG...CONSTANT, come before the wait (ACQBULK in
# SASS) and after it. A kernel written to load its first tile before the wait
# should show them before it: round 11 found every qmxs load after it (ptxas
# scheduled the wait first) and added pdl_pin (cuda/kernels_mx.cu).
#   sh tools/bench/cuda_prewait.sh [kernel ...]
set -eu
DIR=${CUBIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fmoe/cuda}
PATH=$PATH:/usr/local/cuda/bin
BIN=$(ls -t "$DIR"/*.cubin 2>/dev/null | head -1)
if [ -z "$BIN" ]; then
	echo "no cached cubin in $DIR: run fmoe on CUDA first" >&2
	exit 1
fi
[ $# -gt 0 ] || set -- qmxi4_8_8p qmxi4_16_8p qmxe4_128_1_8 qmxs4_32_1_8 qmx8_128_1_4p delta_rule2_32 delta_conv attn_prep attn_split attn_combine
echo "cubin: $BIN"
for k in "$@"; do
	cuobjdump -sass -fun "$k" "$BIN" 2>/dev/null | awk -v k="$k" '
		/Function :/ {f = 1}
		/ACQBULK/ {w = 1}
		/LDG[^ ]*CONSTANT/ {if (w) a++; else b++}
		END {if (f) printf "%-20s weight loads before the wait %3d, after %3d%s\n", k, b, a, w ? "" : " (no wait)"; else printf "%-20s not in the cubin\n", k}'
done
