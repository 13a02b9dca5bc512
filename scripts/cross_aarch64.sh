#!/usr/bin/env bash
# Cross-build fusedrnn for 64-bit Arm Linux (aarch64-linux-gnu-g++, CMake toolchain file
# scripts/toolchains/aarch64-linux-gnu.cmake) and run its tests on an emulated arm64 Debian
# (qemu-user through binfmt_misc, in a chroot).
#
# Parts, each timed:
#   1. arm64 root: a minbase Debian bookworm with python3, python3-venv, python3-dev and
#      libgomp1, a venv /opt/venv with numpy, pytest, hypothesis, scikit-learn and
#      scipy-openblas32 (aarch64 wheels from PyPI).  Built once, kept in $FUSEDRNN_ARM64_ROOT
#      (default /var/cache/fusedrnn-ci/arm64-root) and reused while its stamp matches.
#   2. the scipy-openblas32 aarch64 wheel (headers and libscipy_openblas.so to link against).
#   3. the cross build: the target's Python headers come from the root (python3-dev), the
#      pybind11 headers from the build Python, OpenBLAS from part 2.  Whatever csrc/ holds is
#      built: on aarch64 that is the baseline kernel variant only.
#   4. the module and python/fusedrnn are installed into the root's venv, tests/ copied, and
#      pytest runs there with FUSEDRNN_NUM_THREADS=2.
#
#   scripts/cross_aarch64.sh                    # CI subset: kernels, reference, layers
#   CROSS_AARCH64_TESTS=tests scripts/cross_aarch64.sh   # the full suite (torch is not
#       installed in the root: its parity tests skip)
# Measured on a 2-core AMD EPYC shared with other builds (load 5-10): root from nothing about
# 20 min (debootstrap 13 min, venv and wheels 6 min), the cross build 3 min, the CI subset
# 6.5 min (576 tests); with the root kept, a CI re-run is the build plus the tests.
#   CROSS_AARCH64_TESTS= scripts/cross_aarch64.sh        # build and import check only
#
# Needs root (debootstrap, chroot, mounting /proc) and the Debian packages
# g++-aarch64-linux-gnu qemu-user-static debootstrap; PYTHON (default python3) must have pip
# and pybind11.  Build files: build/cross-aarch64/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
. scripts/cross_wheel.sh
cache=${FUSEDRNN_CROSS_CACHE:-/var/cache/fusedrnn-ci}
mkdir -p "$cache"
arm=${FUSEDRNN_ARM64_ROOT:-$cache/arm64-root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tests=${CROSS_AARCH64_TESTS-tests/test_kernels.py tests/test_reference.py tests/test_layers.py}
work=$root/build/cross-aarch64
# Changing what goes into the root changes the stamp, and the root is rebuilt.
stamp="bookworm minbase python3 python3-venv python3-dev libgomp1 | numpy pytest hypothesis scikit-learn scipy-openblas32"

start=$(date +%s); last=$start
part() {  # part NAME: print the time of the previous part, start the next
  local now; now=$(date +%s)
  [ -n "${pname:-}" ] && printf '  cross_aarch64: %-44s %5d s\n' "$pname" $((now - last))
  pname=$1; last=$now
}

mounted=()
unmount_all() {
  local m
  for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done
  mounted=()
}
trap unmount_all EXIT
mount_proc() {  # mount_proc DIR: /proc and /dev for a chroot, undone at exit
  mount -t proc proc "$1/proc" && mounted+=("$1/proc")
  mount --bind /dev "$1/dev" && mounted+=("$1/dev")
}
# The emulated CPU: a Neoverse N1 (NEON, no SVE/SME).  qemu's default "max" CPU has SME, and
# with it OpenBLAS picks its armv9sme kernels, whose sgemm with a transposed A returns wrong
# numbers under qemu 7.2 (checked with plain cblas calls, without fusedrnn); with sme=off
# or a Neoverse N1 the same calls are right.
export QEMU_CPU=${QEMU_CPU:-neoverse-n1}
in_root() {
  chroot "$arm" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    QEMU_CPU="$QEMU_CPU" "$@"
}

part "binfmt_misc and qemu-aarch64"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64
fi
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64

part "arm64 root (debootstrap, venv, wheels)"
if [ "$(cat "$arm/.fusedrnn-stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$arm" "$arm.tmp"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-dev,libgomp1 \
    bookworm "$arm.tmp" "$mirror"
  cp /etc/resolv.conf "$arm.tmp/etc/resolv.conf"
  # The certificates the build machine trusts (a TLS-inspecting proxy's CA, say) for pip.
  cp /etc/ssl/certs/ca-certificates.crt "$arm.tmp/etc/ssl/host-ca-certificates.crt"
  arm=$arm.tmp
  mount_proc "$arm"
  in_root python3 -m venv /opt/venv
  in_root PIP_CERT=/etc/ssl/host-ca-certificates.crt \
    pip install -q --disable-pip-version-check numpy pytest hypothesis scikit-learn scipy-openblas32
  unmount_all
  arm=${arm%.tmp}
  mv "$arm.tmp" "$arm"
  echo "$stamp" > "$arm/.fusedrnn-stamp"
else
  echo "  reusing $arm"
fi

part "scipy-openblas32 aarch64 wheel"
blas=$cache/openblas-aarch64
fetch_wheel manylinux_2_28_aarch64 "$blas"

part "cross build (aarch64-linux-gnu-g++)"
pyver=$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
suffix=$(in_root python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
# Debian's pyconfig.h includes <aarch64-linux-gnu/python3.X/pyconfig.h>: an include directory
# holding only Python's headers keeps the root's other headers (its glibc) out of the build.
pyinc=$work/pyinc
rm -rf "$pyinc" && mkdir -p "$pyinc/aarch64-linux-gnu"
ln -s "$arm/usr/include/python$pyver" "$pyinc/python$pyver"
ln -s "$arm/usr/include/aarch64-linux-gnu/python$pyver" "$pyinc/aarch64-linux-gnu/python$pyver"
cmake -S . -B "$work/cmake" -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="$root/scripts/toolchains/aarch64-linux-gnu.cmake" \
  -DPython_EXECUTABLE="$(command -v "$python")" \
  -DPython_INCLUDE_DIR="$pyinc/python$pyver" \
  -DCMAKE_CXX_FLAGS="-I$pyinc" \
  -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" \
  -DFUSEDRNN_OPENBLAS_INCLUDE_DIR="$blas/scipy_openblas32/include" \
  -DFUSEDRNN_OPENBLAS_LIBRARY="$blas/scipy_openblas32/lib/libscipy_openblas.so"
cmake --build "$work/cmake"
module=$(ls "$work"/cmake/_core*.so)
file "$module" | grep -q "ARM aarch64" || { echo "not an aarch64 module: $(file "$module")" >&2; exit 1; }

part "install into the root"
site=$(in_root python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$arm$site/fusedrnn" "$arm/opt/fusedrnn-src"
cp -r python/fusedrnn "$arm$site/fusedrnn"
find "$arm$site/fusedrnn" -name '__pycache__' -prune -exec rm -rf {} +
cp "$module" "$arm$site/fusedrnn/_core$suffix"
mkdir -p "$arm/opt/fusedrnn-src"
cp -r tests "$arm/opt/fusedrnn-src/tests"
find "$arm/opt/fusedrnn-src" -name '__pycache__' -prune -exec rm -rf {} +
mount_proc "$arm"
in_root python -c "import fusedrnn, json; print(json.dumps(fusedrnn.build_info()))"

if [ -n "$tests" ]; then
  part "tests under qemu: $tests"
  in_root FUSEDRNN_NUM_THREADS=2 sh -c "cd /opt/fusedrnn-src && python -m pytest -q -p no:cacheprovider $tests"
fi
part ""
echo "cross_aarch64: done in $(( $(date +%s) - start )) s"
