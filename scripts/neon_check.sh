#!/usr/bin/env bash
# ARM64 NEON checks without an ARM machine:
#  1. cross-compile tests/native/panel_gemm_check.cc (simd.h + packed_gemm.h, float and double
#     over odd shapes against a naive loop) statically for aarch64 and run it under qemu;
#  2. compile every CPU kernel source (csrc/cpu/*.cc) for aarch64 (-c only), so the NEON
#     instantiation of the fused loop and the portable parts build.
# Needs aarch64-linux-gnu-g++ and qemu-aarch64-static; the OpenBLAS headers come from the
# scipy_openblas32 wheel of $PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64-static}
PY=${PYTHON:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
blas_inc=$("$PY" -c 'import scipy_openblas32, os; print(os.path.join(os.path.dirname(scipy_openblas32.__file__), "include"))')
start=$(date +%s)

echo "== panel_gemm on aarch64 NEON (qemu)"
"$CXX" -std=c++17 -O2 -static -DFUSEDRNN_ISA=neon -Icsrc -Icsrc/include \
  tests/native/panel_gemm_check.cc -o "$out/panel_gemm_check"
"$QEMU" "$out/panel_gemm_check"

echo "== csrc/cpu/*.cc compile for aarch64"
for src in csrc/cpu/*.cc; do
  case "$src" in
    */lstm.cc|*/gru.cc|*/rnn.cc) isa=(-DFUSEDRNN_ISA=baseline) ;;  # the one namespace an ARM build has
    *) isa=() ;;
  esac
  "$CXX" -std=c++17 -O2 -fopenmp "${isa[@]}" -Icsrc/include -Icsrc -I"$blas_inc" -c "$src" \
    -o "$out/$(basename "$src").o"
  echo "ok $src"
done
echo "neon_check: passed in $(( $(date +%s) - start )) s"
