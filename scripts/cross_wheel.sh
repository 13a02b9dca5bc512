# Sourced by the cross-build scripts: fetch_wheel PLATFORM DEST downloads the scipy-openblas32
# wheel for another platform (the version installed in the build Python when it has one, so
# headers and library match the native build) and unpacks it once into DEST.
fetch_wheel() {
  local platform=$1 dest=$2 version spec
  [ -f "$dest/.unpacked" ] && return 0
  version=$("$python" -c "import importlib.metadata as m; print(m.version('scipy-openblas32'))" 2>/dev/null || true)
  spec=scipy-openblas32${version:+==$version}
  rm -rf "$dest" && mkdir -p "$dest/wheel"
  "$python" -m pip download -q --no-deps --only-binary=:all: --platform "$platform" "$spec" -d "$dest/wheel"
  "$python" -m zipfile -e "$dest"/wheel/*.whl "$dest"
  touch "$dest/.unpacked"
}

# The cross builds take the pybind11 headers from the build Python; the CI venv (what a user
# installs) has no pybind11, which pip only puts in its isolated build environment.
"$python" -c "import pybind11" 2>/dev/null || "$python" -m pip install -q pybind11
