#!/usr/bin/env bash
# CI for the CUDA path, on a machine without a GPU:
#   1. the emulated build (FUSEDRNN_CUDA_EMULATION=ON: the CUDA kernel sources compiled as C++
#      on an emulated device) in its own venv; tests/cuda (emulated cuBLAS vs NumPy, the kernel
#      matrix vs the reference, layers, trainer), then the CPU suite's op/layer/trainer files
#      again with device='cuda' (tests/cuda/device_plugin.py);
#   2. the emulated build again under AddressSanitizer + UndefinedBehaviorSanitizer, tests/cuda;
#   3. the real build with nvcc and cuBLAS from the nvidia-cublas wheel, which must import and
#      report no GPU cleanly (cuda_available() False, device='cuda' a clear RuntimeError).
# Each step prints its wall time.  Environment:
#   CUDA_CHECKS_VENV   venv directory (default build/cuda-checks-venv; reused when present)
#   CUDA_CHECKS_SKIP_REAL=1   skip step 3 (no nvcc on this machine)
#   CUDACXX            nvcc to use (default: the one on PATH)
#   PIP_FIND_LINKS     a directory holding the nvidia-cublas wheel (it is about 450 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${CUDA_CHECKS_VENV:-$ROOT/build/cuda-checks-venv}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusedrnn-cuda-checks.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
T0=$(date +%s.%N)
LAST=$T0

step() {  # step NAME: print the time the previous step took, then announce NAME
  local now; now=$(date +%s.%N)
  if [ -n "${CURRENT:-}" ]; then
    printf '=== %-55s %7.1f s\n' "$CURRENT" "$(awk "BEGIN { print $now - $LAST }")"
  fi
  CURRENT=$1
  LAST=$now
  [ -n "$1" ] && echo "--- $1"
  return 0
}

step "venv and build requirements"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q numpy scipy-openblas32 pytest hypothesis scikit-build-core pybind11 ninja cmake

step "emulated build (FUSEDRNN_CUDA_EMULATION=ON)"
python -m pip install -q --no-build-isolation --force-reinstall --no-deps . \
  -Ccmake.define.FUSEDRNN_CUDA_EMULATION=ON -Cbuild-dir="$WORK/build-emu"
python -c "import fusedrnn; i = fusedrnn.build_info(); assert i['cuda_emulated'] and fusedrnn.cuda_available(), i"

step "tests/cuda on the emulated device"
python -m pytest -q tests/cuda

step "CPU suite again with device='cuda' (device_plugin)"
PYTHONPATH=tests/cuda python -m pytest -q -p device_plugin tests/test_kernels.py tests/test_layers.py \
  tests/test_errors.py tests/test_trainer.py tests/test_trainer_fit.py tests/test_trainer_examples.py

step "emulated build under AddressSanitizer + UndefinedBehaviorSanitizer: tests/cuda"
# The CUDA bindings handle foreign memory (DLPack capsules and their deleters, the
# __cuda_array_interface__): the same suite again with every memory error stopping the run.
python -m pip install -q --no-build-isolation --force-reinstall --no-deps . \
  -Ccmake.define.FUSEDRNN_CUDA_EMULATION=ON -Ccmake.define.FUSEDRNN_SANITIZE=address,undefined \
  -Ccmake.define.CMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF -Cbuild-dir="$WORK/build-emu-asan"
mkdir -p "$WORK/asan-logs"
status=0
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$WORK/asan-logs/asan" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$WORK/asan-logs/ubsan" \
  LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
  python -m pytest -q -p no:cacheprovider tests/cuda || status=$?
if compgen -G "$WORK/asan-logs/*" > /dev/null; then
  echo "sanitizer reports:" >&2
  cat "$WORK"/asan-logs/* >&2
  status=1
fi
[ "$status" = 0 ] || exit "$status"

if [ "${CUDA_CHECKS_SKIP_REAL:-0}" != 1 ]; then
  step "nvidia-cublas wheel"
  python -m pip install -q nvidia-cublas

  step "real CUDA build with nvcc (FUSEDRNN_CUDA=ON)"
  NVCC=${CUDACXX:-$(command -v nvcc)}
  python -m pip install -q --no-build-isolation --force-reinstall --no-deps . \
    -Ccmake.define.FUSEDRNN_CUDA=ON -Ccmake.define.CMAKE_CUDA_COMPILER="$NVCC" -Cbuild-dir="$WORK/build-cuda"

  step "real build: import, no GPU reported cleanly"
  (cd "$WORK" && python - <<'PY'
import fusedrnn
info = fusedrnn.build_info()
print({k: v for k, v in info.items() if k.startswith("cuda")})
assert info["cuda_compiled"] and not info["cuda_emulated"]
n = fusedrnn.cuda_device_count()
if n == 0:
    assert not fusedrnn.cuda_available()
    try:
        fusedrnn.LSTM(2, 2, device="cuda")
    except RuntimeError as exc:
        assert "no CUDA device is visible" in str(exc), exc
    else:
        raise AssertionError("device='cuda' without a GPU must raise")
    print("real CUDA build: imports, no GPU, device='cuda' refused clearly")
else:
    print(f"real CUDA build: {n} GPU(s) visible; run python -m pytest tests/cuda on it")
PY
  )
fi
step ""
printf '=== %-55s %7.1f s\n' "total" "$(awk "BEGIN { print $(date +%s.%N) - $T0 }")"
