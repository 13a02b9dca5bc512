// Threads the kernels use: the time loop's own threads and the BLAS pool.
#pragma once

namespace fusedrnn {

int num_threads();
void set_num_threads(int n);  // n >= 1; also sets the BLAS pool

}  // namespace fusedrnn
