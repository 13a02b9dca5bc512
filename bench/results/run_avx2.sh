#!/usr/bin/env bash
# The AVX2 measurements of bench/results/avx2_*.txt: fusedrnn against torch in the same run,
# 2 threads (small models also 1), float32 and float64.
# Usage: run_avx2.sh TAG [all|standard|small]; TAG names the build (baseline, packed).  The
# package measured is the one $PYTHON imports (PYTHONPATH can point at another build).
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:?tag}
what=${2:-all}
py=${PYTHON:-.venv/bin/python}
out=bench/results
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
{ date -u; uptime; } >> "$out/avx2_${tag}_load.txt"
[ "$what" = small ] || for dt in float32 float64; do
  $py -m fusedrnn bench --grid standard --contenders fusedrnn,torch --threads 2 --dtype $dt \
    --markdown "$out/avx2_${tag}_standard_${dt}.md" | tee "$out/avx2_${tag}_standard_${dt}.txt"
  uptime >> "$out/avx2_${tag}_load.txt"
done
[ "$what" = standard ] || for th in 1 2; do
  for T in 24 100 251; do
    $py -m fusedrnn bench --cell lstm -B 16 -H 64 -T $T --contenders fusedrnn,torch --threads $th
  done | tee "$out/avx2_${tag}_small_lstm_t${th}.txt"
  uptime >> "$out/avx2_${tag}_load.txt"
done
# The FMA ceiling of both cores in the same period (bench/fma_peak.cc, 10 ymm chains each).
if [ "$what" != small ]; then
  fma=$(mktemp)
  g++ -O2 -mavx2 -mfma bench/fma_peak.cc -o "$fma"
  { uptime; ("$fma" & "$fma" & wait); } | tee "$out/avx2_${tag}_fma_peak.txt"
  rm -f "$fma"
fi
