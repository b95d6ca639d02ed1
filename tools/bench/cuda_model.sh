# Sourced by tools/bench/cuda_decode.sh and cuda_wg.sh (D = .devbin, OUT, W,
# t0 set): the HBM and pinned host-to-device copy ceilings (HBM, H2D, GB/s)
# from the copy benchmarks, then the 397B-shape synthetic model with
# EXPERTS (default 32) experts per layer in $W/model, made unless it is
# there; exits the script when making it fails.
(cd cuda && "$D/cuda.test" -test.run '^$' -test.bench 'Copy' -test.benchtime 2x 2>&1) >"$OUT/copy.txt"
HBM=$(awk '/CopyD2D/ {for(i=1;i<=NF;i++) if($(i)=="GB/s") print $(i-1)}' "$OUT/copy.txt" | tail -1)
H2D=$(awk '/CopyH2D/ {for(i=1;i<=NF;i++) if($(i)=="GB/s") print $(i-1)}' "$OUT/copy.txt" | tail -1)
if [ ! -f "$W/model/model_weights.json" ]; then
	rm -rf "$W"; mkdir -p "$W"
	"$D/fmoe" synth -o "$W/hf" --preset 397b-shape --experts "${EXPERTS:-32}" --quiet &&
	"$D/fmoe" pack-experts "$W/hf" --bits 4 -o "$W/model/packed_experts" --quiet &&
	"$D/fmoe" extract "$W/hf" -o "$W/model" --quiet || exit 1
	rm -rf "$W/hf"
fi
echo "== model ready $(( $(date +%s) - t0 )) s; HBM $HBM GB/s, H2D $H2D GB/s"
