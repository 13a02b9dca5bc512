// The CUDA bindings (cuda_ops.cc), registered by module.cc in builds with CUDA or its emulation.
#pragma once

#include <pybind11/pybind11.h>

namespace fusedrnn::bind {
void bind_cuda(pybind11::module_& m);
}
