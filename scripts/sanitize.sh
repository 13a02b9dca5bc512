#!/usr/bin/env bash
# Build fusedrnn with AddressSanitizer and UndefinedBehaviorSanitizer and run the kernel, error,
# layer, boundary and thread tests under them.  Exits non-zero on any test failure or sanitizer
# report (every report also stops the process that hit it).
#
#   scripts/sanitize.sh            # ASan + UBSan
#   SANITIZE=thread scripts/sanitize.sh   # ThreadSanitizer on the thread tests (see README)
#
# The build and its virtual environment live under build/sanitize-<kind>/ (reused by later runs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kind=${SANITIZE:-address,undefined}
tag=$(echo "$kind" | tr ',' '-')
work=$root/build/sanitize-$tag
start=$(date +%s)
mkdir -p "$work"

python=${PYTHON:-python3}
if [ ! -x "$work/venv/bin/python" ]; then
  "$python" -m venv "$work/venv"
  "$work/venv/bin/pip" install -q numpy scipy-openblas32 pytest hypothesis scikit-build-core pybind11 ninja cmake
fi
py=$work/venv/bin/python
# ThreadSanitizer cannot see the synchronisation inside libgomp (not instrumented), so an OpenMP
# team would only yield false reports: its build leaves OpenMP out, and the packed time loop runs
# as a team of one while fusedrnn's own pool (threading.cc) carries every parallel product.
omp=ON
case "$kind" in *thread*) omp=OFF ;; esac
"$py" -m pip install -q --no-build-isolation "$root" \
  -Cbuild-dir="$work/cmake" -Ccmake.define.FUSEDRNN_SANITIZE="$kind" \
  -Ccmake.define.FUSEDRNN_OPENMP="$omp"
echo "built in $(( $(date +%s) - start )) s" >&2

logs=$work/logs
rm -rf "$logs" && mkdir -p "$logs"
case "$kind" in
  *thread*)
    runtime=$(gcc -print-file-name=libtsan.so)
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan:suppressions=$root/scripts/tsan.supp"
    # Only the thread tests: TSan is about the pool, the thread count and the shared caches.
    tests=(tests/test_threads.py)
    ;;
  *)
    runtime=$(gcc -print-file-name=libasan.so)
    # CPython keeps its objects alive at exit by design: leak reports would be noise.
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$logs/asan"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
    # test_memory_errors.py is left out: it limits the address space (RLIMIT_AS), and ASan
    # needs terabytes of it for its shadow memory.
    tests=(tests/test_kernels.py tests/test_errors.py tests/test_layers.py tests/test_core_boundary.py
           tests/test_input_arrays.py tests/test_threads.py tests/test_interrupt.py
           tests/test_layers_step.py)
    ;;
esac

status=0
# libstdc++ is preloaded too: the runtime must find its C++ exception functions at start-up, and
# the interpreter itself does not link libstdc++.
cxx=$(gcc -print-file-name=libstdc++.so)
(cd "$root" && LD_PRELOAD="$runtime $cxx" "$py" -m pytest -q -p no:cacheprovider "${tests[@]}") || status=$?
# Reports from this process or from any child (the subprocess tests) land in $logs.
if compgen -G "$logs/*" > /dev/null; then
  echo "sanitizer reports:" >&2
  cat "$logs"/* >&2
  status=1
fi
echo "sanitize ($kind): $(( $(date +%s) - start )) s, exit $status" >&2
exit $status
