// Threads the kernels use (one OpenMP pool: the time loop and the split BLAS products), how the
// default count was chosen, a guard against oversubscribed cores, and interrupt polling.
#pragma once

#include <cstdint>
#include <exception>
#include <string>

namespace fusedrnn {

int num_threads();            // 1 in a child forked after the pool started
void set_num_threads(int n);  // n >= 1

// Call before a parallel region of more than one thread.
void note_pool_started();
bool threads_disabled_by_fork();

// --- The default thread count --------------------------------------------------------------
// The CPUs this process may use (affinity mask, capped by a cgroup CPU quota), then capped by
// FUSEDRNN_NUM_THREADS if set, else by the first entry of OMP_NUM_THREADS.  An environment
// value that is not an integer >= 1 is ignored and reported in `problem` (the Python package
// turns it into a RuntimeWarning at import).
struct ThreadDefault {
  int threads = 1;
  int cpus = 1;             // CPUs usable before any environment cap
  std::string source;       // e.g. "affinity", "cgroup quota", "FUSEDRNN_NUM_THREADS"
  std::string problem;      // empty, or what was wrong with an environment variable
};
const ThreadDefault& thread_default();
// The CPU quota of the cgroup whose files sit under `root` (cgroup v2 cpu.max, else v1
// cpu/cpu.cfs_quota_us and cpu.cfs_period_us): ceil(quota / period), or 0 when unlimited or
// unreadable.  Exposed for tests.
int cgroup_cpu_limit(const std::string& root);

// --- The cache ---------------------------------------------------------------------------------
// Bytes of one core's level-2 cache as the system reports it, 0 where it does not say.
int64_t l2_cache_bytes();
int64_t parse_cache_size(const std::string& text);  // "1024K", "2M", bytes; 0 if not a size

// --- The pool of the split BLAS products ------------------------------------------------------
// Runs body(ctx, i) for every i in [0, n) on up to `threads` threads: the calling thread and
// its helpers claim indices one at a time, so a thread that loses its core (or is slow to
// wake) leaves its share to the others; the call returns when every index has run.  The
// helpers are the OpenMP team that runs the time loops (one pool: a second one would spin on
// the cores the other works on); a build without OpenMP has its own pool, whose waiting
// threads spin briefly, then yield the CPU, then sleep, and where a call made while another
// thread uses the pool runs on the calling thread.  Called inside a parallel region it runs
// on the calling thread.  body must not throw.  Reports each multi-threaded run to the
// contention guard below.
using IndexBody = void (*)(void* ctx, int64_t i);
// A matrix product of fewer flops than this is done before a second thread would have
// started: the split products (the BLAS path and the packed loop's) run it on the calling thread.
constexpr double kSplitFlops = 4e6;
void parallel_for(int64_t n, int threads, IndexBody body, void* ctx);

// --- Oversubscription ----------------------------------------------------------------------
// When another process holds the cores, a thread of a parallel region can lose its core for a
// whole scheduler time slice (milliseconds), and everyone else waits for it at the region's
// end.  Each parallel region reports how long its calling thread worked and how long it
// waited; a wait far beyond the work marks the cores as contended, and the kernels then run
// on one thread for a while (doubling up to a few seconds while it lasts) before trying
// threads again.  Such waits must come again within a few regions (threading.cc), not once.
int threads_now();  // num_threads(), or 1 while the cores are contended
// A region of `threads` threads (> 1) in which the calling thread waited `wait_ns` for the
// others where a wait of `work_ns` was to be expected (the region's own work, for the pool).
void report_region(int threads, int64_t work_ns, int64_t wait_ns);
int64_t now_ns();   // monotonic clock
// One pause in a spin-wait loop, on every architecture (x86 PAUSE, Arm YIELD, else nothing);
// after a while of spinning, std::this_thread::yield() (not the POSIX sched_yield).
void cpu_relax();
// On by default; tests turn it off to make sure the threads they ask for are used.
void set_contention_guard(bool on);
struct ContentionStats {
  int64_t regions = 0, stalls = 0, fallbacks = 0;
  bool contended = false;
};
ContentionStats contention_stats();

// --- Interrupts ----------------------------------------------------------------------------
// The bindings install a poll for the duration of a kernel call (it returns true when the
// call must stop, e.g. a pending Ctrl-C).  The kernels call interrupt_requested() on the
// calling thread between steps; it runs the poll at most every kPollInterval of work and
// remembers a positive answer.  A kernel that sees true stops all its threads, frees what it
// holds and throws Interrupted from the calling thread, outside any parallel region.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "fusedrnn: kernel call interrupted"; }
};
using InterruptPoll = bool (*)(void* ctx);
constexpr int64_t kPollIntervalNs = 25'000'000;  // 25 ms

class InterruptScope {
 public:
  InterruptScope(InterruptPoll poll, void* ctx);
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  InterruptPoll saved_poll_;
  void* saved_ctx_;
};
// In a loop of similar steps the clock is read only every few calls (tiny steps would notice
// it); before_long_work reads it now, for a call followed by much more work than the ones
// before it.
bool interrupt_requested(bool before_long_work = false);
inline void throw_if_interrupted(bool before_long_work = false) {
  if (interrupt_requested(before_long_work)) throw Interrupted();
}

}  // namespace fusedrnn
