// OpenMP when the compiler has it; otherwise the few calls the kernels make, answered for a
// team of one, so a build without OpenMP (Apple clang without libomp, say) runs every parallel
// region on the calling thread and stays correct.
#pragma once

#if defined(_OPENMP)
#include <omp.h>
#else
inline int omp_get_thread_num() { return 0; }
inline int omp_get_num_threads() { return 1; }
inline int omp_in_parallel() { return 0; }
#endif
