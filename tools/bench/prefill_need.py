#!/usr/bin/env python3
"""What E >= 0.5 in (a) prefill would take, from the 397B shapes alone
(docs/benchmarks.md, round 15): multiply-adds per prompt token of the
benchmark checkpoint (32 experts per layer), the tensor-core rate that
E = 0.5 against the byte floor needs, and the best E at a card's rate.

  python3 tools/bench/prefill_need.py [tok/s E] ...   (a run's prefill_tok_s and prefill_E)
Defaults: the round 12 table's K=4 and K=10 resident prefill (1926 at 0.065, 1336 at 0.045).
"""
import sys

H, EXPERTS, STEP, PEAK = 4096, 32, 128, 989e12  # hidden, experts per layer, tokens per step, dense bf16 FLOP/s (H100/H200 spec)
GDN = H * (2048 + 2048 + 8192 + 8192) + H * 128 + 8192 * H  # qkvz, ba, out
ATT = H * 16384 + 2 * H * 512 + 8192 * H  # q with gate, k, v, o
def weights(K):  # per prompt token, lm_head excluded
    return 45 * GDN + 15 * ATT + 60 * (H * EXPERTS + H + 3 * H * 1024 * (K + 1))

runs = [(4, 1926.0, 0.065), (10, 1336.0, 0.045)]
if len(sys.argv) > 1:
    a = sys.argv[1:]
    runs = [(int(a[i]), float(a[i + 1]), float(a[i + 2])) for i in range(0, len(a), 3)]
for K, tok, e in runs:
    fl = 2 * weights(K)
    floor = tok / e  # tok/s of the byte floor
    need = 0.5 * floor * fl  # useful FLOP/s at E = 0.5
    best = (STEP / floor) / (STEP * 2 * fl / PEAK)  # byte floor time / two-part MMA time at PEAK
    print(f"K={K}: {weights(K)/1e9:.2f} G weights, {fl/1e9:.1f} GFLOP a token, {STEP*fl/1e12:.2f} TFLOP a {STEP}-token step; "
          f"byte floor {floor:.0f} tok/s; E 0.5 needs {need/1e12:.0f} TFLOP/s useful ({2*need/1e12:.0f} with two bf16 parts, "
          f"{2*need/PEAK:.0%} of {PEAK/1e12:.0f}); now {tok*fl/1e12:.0f}; best E at that rate {best:.2f}")
