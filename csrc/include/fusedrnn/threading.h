// Threads the kernels use (one OpenMP pool: the time loop and the split BLAS products).
#pragma once

namespace fusedrnn {

int num_threads();
void set_num_threads(int n);  // n >= 1

}  // namespace fusedrnn
