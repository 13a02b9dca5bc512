#!/usr/bin/env bash
# The AVX-512 measurements of bench/results/avx512_*.txt: fusedrnn against torch in the same
# run, 2 threads (small models also 1), float32 and float64, every contender on AVX-512
# (fusedrnn bench --isa avx512), and the FMA ceiling of both cores in the same period.
# Usage: run_avx512.sh [all|standard|small].  The package measured is the one $PYTHON imports
# (PYTHONPATH can point at another build).
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
py=${PYTHON:-.venv/bin/python}
out=bench/results
{ date -u; uptime; } >> "$out/avx512_load.txt"
[ "$what" = small ] || for dt in float32 float64; do
  $py -m fusedrnn bench --isa avx512 --grid standard --contenders fusedrnn,torch --threads 2 --dtype $dt \
    --markdown "$out/avx512_standard_${dt}.md" | tee "$out/avx512_standard_${dt}.txt"
  uptime >> "$out/avx512_load.txt"
done
[ "$what" = standard ] || for th in 1 2; do
  for T in 24 100 251; do
    $py -m fusedrnn bench --isa avx512 --cell lstm -B 16 -H 64 -T $T --contenders fusedrnn,torch --threads $th
  done | tee "$out/avx512_small_lstm_t${th}.txt"
  uptime >> "$out/avx512_load.txt"
done
if [ "$what" != small ]; then
  fma=$(mktemp)
  g++ -O2 -mavx512f -mfma bench/fma_peak.cc -o "$fma"
  { uptime; ("$fma" & "$fma" & wait); } | tee "$out/avx512_fma_peak.txt"
  rm -f "$fma"
fi
