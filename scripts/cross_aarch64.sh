#!/usr/bin/env bash
# Cross-build fusedrnn for 64-bit Arm Linux (aarch64-linux-gnu-g++, CMake toolchain file
# scripts/toolchains/aarch64-linux-gnu.cmake) and run its tests on an emulated arm64 Debian
# (qemu-user through binfmt_misc, in a chroot).
#
# Parts, each timed:
#   1. arm64 root, without an installer: a private apt configuration (its own sources list
#      for bookworm arm64 and its own state; the host's dpkg is not touched) resolves and
#      downloads the .debs of python3.11 (its stdlib and the shared libraries it loads),
#      libpython3.11-dev (the headers of the cross build), libstdc++6, libgomp1 and dash, and
#      `dpkg-deb -x` unpacks them into the root (no maintainer script runs; none is needed to
#      start Python).  numpy, pytest, hypothesis, scikit-learn and scipy-openblas32 (the
#      version the module is linked against) are aarch64 wheels from PyPI, put into the
#      root's /usr/lib/python3/dist-packages by the build machine's pip (--target with
#      --platform: nothing runs under emulation).  Kept in $FUSEDRNN_ARM64_ROOT (default
#      /var/cache/fusedrnn-ci/arm64-debs-root) and reused while its stamp matches;
#      FUSEDRNN_ARM64_FRESH=1 builds it again.
#   2. the scipy-openblas32 aarch64 wheel (headers and libscipy_openblas.so to link against).
#   3. the cross build: the target's Python headers come from the root (libpython3.11-dev),
#      the pybind11 headers from the build Python, OpenBLAS from part 2.  Whatever csrc/ holds
#      is built: on aarch64 that is the baseline kernel variant only.
#   4. the module and python/fusedrnn are installed into the root, tests/ copied, and pytest
#      runs there with FUSEDRNN_NUM_THREADS=2.
#
#   scripts/cross_aarch64.sh                    # CI subset: kernels, reference, layers
#   CROSS_AARCH64_TESTS=tests scripts/cross_aarch64.sh   # the full suite (torch is not
#       installed in the root: its parity tests skip)
#   CROSS_AARCH64_TESTS= scripts/cross_aarch64.sh        # build and import check only
# Measured on a 2-core AMD EPYC shared with other builds (load 8-14), nothing cached: the root
# 28 s (apt's lists and 53 .debs, 27 MB; the wheels from a warm pip cache), the cross build
# 5 min, the CI subset 10 min (576 tests); at load 1-2 (a whole CI run from a fresh clone) the
# root took 8 s, the build 41 s, the tests 128 s.  The debootstrapped root took 20 min.
#
# Needs root (chroot, mounting /proc) and the Debian packages g++-aarch64-linux-gnu
# qemu-user-static binfmt-support file, plus apt and debian-archive-keyring (in every Debian);
# PYTHON (default python3, a CPython 3.11 like the root's) must have pip and pybind11.
# Build files: build/cross-aarch64/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
. scripts/cross_wheel.sh
cache=${FUSEDRNN_CROSS_CACHE:-/var/cache/fusedrnn-ci}
mkdir -p "$cache"
arm=${FUSEDRNN_ARM64_ROOT:-$cache/arm64-debs-root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
tests=${CROSS_AARCH64_TESTS-tests/test_kernels.py tests/test_reference.py tests/test_layers.py}
work=$root/build/cross-aarch64
site=/usr/lib/python3/dist-packages
debs="python3.11 libpython3.11-dev libstdc++6 libgomp1 dash"
# The root's scipy-openblas32 is the one the module is linked against (part 2).
blas_version=$("$python" -c "import importlib.metadata as m; print(m.version('scipy-openblas32'))" \
  2>/dev/null || true)
wheels="numpy pytest hypothesis scikit-learn scipy-openblas32${blas_version:+==$blas_version}"
# Changing what goes into the root changes the stamp, and the root is rebuilt.
stamp="bookworm arm64 debs: $debs | wheels: $wheels"
if [ "${FUSEDRNN_ARM64_FRESH:-0}" = 1 ]; then rm -f "$arm/.fusedrnn-stamp"; fi

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
in_root() {  # in_root [VAR=VALUE...] COMMAND...: COMMAND in the root, in a clean environment
  local vars=()
  while [[ "${1:-}" == *=* ]]; do vars+=("$1"); shift; done
  env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" "${vars[@]}" \
    /usr/sbin/chroot "$arm" "$@"
}

part "binfmt_misc and qemu-aarch64"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64
fi
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64

part "arm64 root (Debian .debs unpacked, aarch64 wheels)"
if [ "$(cat "$arm/.fusedrnn-stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$arm" "$arm.tmp"
  apt_dir=$work/apt-arm64
  rm -rf "$apt_dir"
  mkdir -p "$apt_dir"/{state/lists/partial,cache/archives/partial,parts,prefs}
  touch "$apt_dir/state/status"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "deb [arch=arm64 signed-by=$keyring] $mirror bookworm main"
    echo "deb [arch=arm64 signed-by=$keyring] $mirror bookworm-updates main"
    echo "deb [arch=arm64 signed-by=$keyring] $security_mirror bookworm-security main"
  } > "$apt_dir/sources.list"
  {
    echo 'APT::Architecture "arm64";'
    echo 'APT::Architectures { "arm64"; };'
    echo 'APT::Install-Recommends "false";'
    echo 'Acquire::Languages "none";'
    echo "Dir::State \"$apt_dir/state\";"
    echo "Dir::State::status \"$apt_dir/state/status\";"
    echo "Dir::Cache \"$apt_dir/cache\";"
    echo "Dir::Etc::SourceList \"$apt_dir/sources.list\";"
    echo "Dir::Etc::SourceParts \"$apt_dir/parts\";"
    echo "Dir::Etc::Parts \"$apt_dir/parts\";"
    echo "Dir::Etc::PreferencesParts \"$apt_dir/prefs\";"
  } > "$apt_dir/apt.conf"
  # The wheels download while apt works (no deb ships files in $site).
  mkdir -p "$arm.tmp$site"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$python" -m pip install -q --no-compile \
    --target "$arm.tmp$site" --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
    $wheels &
  pip_pid=$!
  APT_CONFIG=$apt_dir/apt.conf apt-get -q update
  # With an empty dpkg status apt downloads the whole dependency closure of the packages named.
  APT_CONFIG=$apt_dir/apt.conf DEBIAN_FRONTEND=noninteractive \
    apt-get -q -y install --download-only $debs
  for deb in "$apt_dir"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$arm.tmp"; done
  echo "  unpacked $(ls "$apt_dir"/cache/archives/*.deb | wc -l) packages"
  ln -sf python3.11 "$arm.tmp/usr/bin/python3"
  ln -sf python3.11 "$arm.tmp/usr/bin/python"
  ln -sf dash "$arm.tmp/bin/sh"
  mkdir -p "$arm.tmp/proc" "$arm.tmp/dev" "$arm.tmp/root" && mkdir -p -m 1777 "$arm.tmp/tmp"
  wait "$pip_pid"
  rm -rf "$apt_dir"
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
