// Threads the kernels use (one OpenMP pool: the time loop and the split BLAS products).
#pragma once

namespace fusedrnn {

int num_threads();            // 1 in a child forked after the pool started
void set_num_threads(int n);  // n >= 1

// Call before a parallel region of more than one thread.
void note_pool_started();
bool threads_disabled_by_fork();

}  // namespace fusedrnn
