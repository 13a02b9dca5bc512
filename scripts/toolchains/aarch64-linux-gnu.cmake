# Cross compiling for 64-bit Arm Linux with Debian's aarch64-linux-gnu GCC (its own sysroot,
# /usr/aarch64-linux-gnu, supplies glibc and libstdc++).  Used by scripts/cross_aarch64.sh,
# which passes the target's Python headers and OpenBLAS explicitly.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# pybind11's CMake files come from the build machine's venv.
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
