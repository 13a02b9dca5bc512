// Forced into every translation unit of scripts/cross_windows.sh (g++ -include).  MinGW-w64
// ships POSIX shims that MSVC does not (winpthreads: pthread.h with pthread_atfork defined as
// a no-op macro, sched.h, unistd.h), so MinGW alone would accept code that breaks the MSVC
// build.  This header first reads every standard header (the C++ library itself may use the
// shims), then forbids the POSIX names and, through the stub headers that the script puts
// first on the include path, the POSIX-only headers, for fusedrnn's own code.
#pragma once
#include <bits/stdc++.h>

#define FUSEDRNN_WINDOWS_GUARD_ARMED 1

// winpthreads defines some of them as macros: drop those first (poisoning a macro only warns).
#undef pthread_atfork
#undef pthread_sigmask
#undef sched_yield

#pragma GCC poison pthread_atfork pthread_sigmask pthread_setaffinity_np pthread_getaffinity_np
#pragma GCC poison sigset_t sigfillset sigemptyset sigaddset sigaction
#pragma GCC poison sched_yield sched_getaffinity sched_setaffinity sched_getcpu
#pragma GCC poison aligned_alloc posix_memalign memalign sysconf getpid fork usleep nanosleep
