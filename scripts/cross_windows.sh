#!/usr/bin/env bash
# Cross-compile fusedrnn's C++ core for 64-bit Windows with MinGW-w64 and link it against the
# Windows build of OpenBLAS (the scipy-openblas32 win_amd64 wheel): every csrc/cpu source, the
# three x86 kernel variants (baseline, avx2, avx512), -Wall -Werror, through the real
# CMakeLists.txt (FUSEDRNN_CORE_ONLY: a DLL without the Python module).
#
# MinGW accepts POSIX calls that MSVC rejects (its winpthreads shims), so every file is compiled
# with scripts/toolchains/windows_guard.h forced in and stub headers in front of the POSIX-only
# ones: a POSIX header or call in fusedrnn's code fails this script.
#
# Then the pybind11 bindings (csrc/bindings, without the CUDA ones) are compiled, not linked,
# against CPython's Windows headers (Include/ and PC/pyconfig.h from the CPython source that
# Debian ships as python3.X's orig tarball): no Windows import library python3X.lib here.
#
# Not covered: linking the Python module, running anything, and MSVC itself (its
# compiler-specific branches: __cpuidex/_xgetbv in dispatch.cc, /arch flags, __forceinline).
# A hosted Windows CI runner proves those.
#
#   scripts/cross_windows.sh        # PYTHON (default python3) must have pip
# Work files: build/cross-windows/; the downloaded wheel: $FUSEDRNN_CROSS_CACHE
# (default /var/cache/fusedrnn-ci, build/cross-cache when that is not writable).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
. scripts/cross_wheel.sh
cache=${FUSEDRNN_CROSS_CACHE:-/var/cache/fusedrnn-ci}
mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ] || cache=$root/build/cross-cache
work=$root/build/cross-windows
start=$(date +%s)

command -v x86_64-w64-mingw32-g++-posix >/dev/null ||
  { echo "x86_64-w64-mingw32-g++-posix not found (apt-get install g++-mingw-w64-x86-64-posix)" >&2; exit 1; }

blas=$cache/openblas-win_amd64
fetch_wheel win_amd64 "$blas"

# Stubs for the POSIX-only headers: usable while the C++ library's own headers are read,
# an error once windows_guard.h has armed them.
stubs=$work/posix-stubs
rm -rf "$stubs"
for h in pthread.h sched.h unistd.h dlfcn.h sys/mman.h sys/time.h sys/param.h sys/resource.h sys/sysctl.h; do
  mkdir -p "$(dirname "$stubs/$h")"
  cat > "$stubs/$h" <<STUB
#if defined(FUSEDRNN_WINDOWS_GUARD_ARMED)
#error "<$h> is POSIX-only: MSVC has no such header (guard it with #if !defined(_WIN32))"
#endif
#include_next <$h>
STUB
done

rm -rf "$work/cmake"
cmake -S . -B "$work/cmake" -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="$root/scripts/toolchains/mingw-w64-x86_64.cmake" \
  -DFUSEDRNN_CORE_ONLY=ON \
  -DFUSEDRNN_OPENBLAS_INCLUDE_DIR="$blas/scipy_openblas32/include" \
  -DFUSEDRNN_OPENBLAS_LIBRARY="$blas/scipy_openblas32/lib/libscipy_openblas.lib" \
  -DFUSEDRNN_CXX_FLAGS="-Wall;-Werror;-I$stubs;-include;$root/scripts/toolchains/windows_guard.h"
cmake --build "$work/cmake"

dll=$work/cmake/libfusedrnn_core.dll
imports=$(x86_64-w64-mingw32-objdump -p "$dll" | sed -n 's/^\s*DLL Name: //p' | sort | tr '\n' ' ')
echo "fusedrnn core for Windows: $dll imports $imports"
case " $imports " in *" libscipy_openblas.dll "*) ;; *) echo "the core does not import libscipy_openblas.dll" >&2; exit 1 ;; esac
# CPython's headers for Windows, from Debian's copy of the CPython 3.11 source.
cpy=$cache/cpython-3.11.2
if [ ! -f "$cpy/.unpacked" ]; then
  rm -rf "$cpy" && mkdir -p "$cpy"
  curl -sSfL "${DEBIAN_MIRROR:-http://deb.debian.org/debian}/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz" |
    tar -xz -C "$cpy" --strip-components=1 --wildcards '*/Include/*' '*/PC/pyconfig.h'
  touch "$cpy/.unpacked"
fi
pybind11_inc=$("$python" -c "import pybind11; print(pybind11.get_include())")
mkdir -p "$work/bindings"
# The flags of the GCC branch of CMakeLists.txt plus the guard; two files at a time.
ls csrc/bindings/*.cc | grep -v '/cuda_' | xargs -P 2 -I{} sh -c '
  x86_64-w64-mingw32-g++-posix -std=gnu++17 -O3 -fno-math-errno -fno-trapping-math -fopenmp \
    -Wall -Werror -I"$1" -include "$2" -I"$3/Include" -I"$3/PC" -isystem "$4" \
    -Icsrc -Icsrc/include -I"$5" -DFUSEDRNN_HAVE_AVX2 -DFUSEDRNN_HAVE_AVX512 \
    -c "$6" -o "$7/$(basename "$6" .cc).obj" && echo "  compiled $6"' _ \
  "$stubs" "$root/scripts/toolchains/windows_guard.h" "$cpy" "$pybind11_inc" \
  "$blas/scipy_openblas32/include" {} "$work/bindings"

echo "cross_windows: done in $(( $(date +%s) - start )) s"
