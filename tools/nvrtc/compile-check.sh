#!/bin/sh
# Compiles the embedded CUDA kernels with NVRTC alone (no GPU, no driver):
# the CUDA C errors a GPU run would hit, caught on any x86-64 Debian box.
# Fetches Debian bookworm's libnvrtc 11.8 (non-free; checksums pinned below)
# into .cache/nvrtc once, then runs `go test ./cuda -run CompileOnly` with
# FMOE_NVRTC pointing at it. When the packages cannot be fetched (no network
# to deb.debian.org) or the box is not x86-64, it says so and exits 0: the
# GPU checks (tools/bench/cuda.sh) compile the kernels too.
set -eu
cd "$(dirname "$0")/../.."
D=${NVRTC_CACHE:-$PWD/.cache/nvrtc}
POOL=http://deb.debian.org/debian/pool/non-free/n/nvidia-cuda-toolkit
LIB=$D/root/usr/lib/x86_64-linux-gnu
if [ "$(uname -m)" != x86_64 ] || ! command -v dpkg-deb >/dev/null; then
	echo "kernel compile check skipped: needs x86-64 and dpkg-deb"
	exit 0
fi
if [ ! -f "$LIB/libnvrtc.so.11.8.89" ]; then
	mkdir -p "$D"
	for p in "libnvrtc11.2_11.8.89~11.8.0-5~deb12u1_amd64.deb 051b70a3d8737eae470b4158e234cf112c803f631b2c77ae60a24a1146309c22" \
		"libnvrtc-builtins11.8_11.8.89~11.8.0-5~deb12u1_amd64.deb e446e112c304b86a35925bea6a3991a866a29736fac261adb218ec29efb49bb8"; do
		set -- $p
		if ! curl -sfL --retry 2 --max-time 120 -o "$D/$1.part" "$POOL/$1"; then
			echo "kernel compile check skipped: could not fetch $1 from deb.debian.org"
			exit 0
		fi
		if ! echo "$2  $D/$1.part" | sha256sum -c --quiet; then
			echo "kernel compile check: checksum mismatch for $1" >&2
			exit 1
		fi
		mv "$D/$1.part" "$D/$1"
		dpkg-deb -x "$D/$1" "$D/root"
	done
fi
echo "kernel compile check: NVRTC 11.8 for sm_90"
LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} FMOE_NVRTC=$LIB/libnvrtc.so.11.8.89 go test -count=1 -run '^TestCompileOnly$' ./cuda
