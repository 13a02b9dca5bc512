#include "threading.h"

#include "omp_compat.h"

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>  // the L2 size
#elif defined(__APPLE__)
#include <sys/sysctl.h>  // the L2 size
#endif

// POSIX only: fork handling and the workers' signal mask (Windows has neither fork nor
// POSIX signals; its Ctrl-C handler runs on a thread of its own), and sysconf.
#if !defined(_WIN32)
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace fusedrnn {
namespace {

// The CPUs this process may run on: its affinity mask where the system has one.
int affinity_cpus() {
#if defined(__linux__)
  // Masks for machines with more than 1024 CPUs need a larger set.
  for (int cpus = 1024; cpus <= (1 << 16); cpus *= 2) {
    cpu_set_t* set = CPU_ALLOC(cpus);
    if (!set) break;
    const size_t bytes = CPU_ALLOC_SIZE(cpus);
    CPU_ZERO_S(bytes, set);
    if (sched_getaffinity(0, bytes, set) == 0) {
      const int n = CPU_COUNT_S(bytes, set);
      CPU_FREE(set);
      return n > 0 ? n : 1;
    }
    CPU_FREE(set);
    if (errno != EINVAL) break;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

bool read_file(const std::string& path, std::string& text) {
  std::ifstream f(path);
  if (!f) return false;
  std::ostringstream s;
  s << f.rdbuf();
  text = s.str();
  return true;
}

int ceil_div_at_least_1(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  const long long n = (quota + period - 1) / period;
  return n < 1 ? 1 : (n > (1 << 20) ? (1 << 20) : static_cast<int>(n));
}

#if defined(__linux__)
// This process's cgroup v2 directory below the mount point ("0::/path" in /proc/self/cgroup).
std::string cgroup_v2_path() {
  std::string text;
  if (!read_file("/proc/self/cgroup", text)) return "";
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return "";
}
#endif

// Parse an environment value as an integer >= 1; false (and a description in `problem`)
// when it is set but not one.  For OMP_NUM_THREADS only the first comma-separated entry
// counts (the rest are for nested levels).
bool env_threads(const char* name, bool first_entry, int& out, std::string& problem) {
  const char* raw = std::getenv(name);
  if (!raw) return false;
  std::string v = raw;
  if (first_entry) v = v.substr(0, v.find(','));
  const auto b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
  v = b == std::string::npos ? "" : v.substr(b, e - b + 1);
  char* end = nullptr;
  errno = 0;
  const long n = v.empty() ? 0 : std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || n < 1) {
    if (!problem.empty()) problem += "; ";
    problem += std::string(name) + "='" + raw + "' is not an integer >= 1 and is ignored";
    return false;
  }
  out = n > (1 << 20) ? (1 << 20) : static_cast<int>(n);
  return true;
}

ThreadDefault compute_default() {
  ThreadDefault d;
  d.cpus = affinity_cpus();
  d.source = "affinity";
#if !defined(__linux__)
  d.source = "hardware_concurrency";
#endif
#if defined(__linux__)
  int quota = cgroup_cpu_limit("/sys/fs/cgroup" + cgroup_v2_path());
  if (quota == 0) quota = cgroup_cpu_limit("/sys/fs/cgroup");
  if (quota > 0 && quota < d.cpus) {
    d.cpus = quota;
    d.source = "cgroup quota";
  }
#endif
  d.threads = d.cpus;
  int env = 0;
  const char* env_name = nullptr;
  if (env_threads("FUSEDRNN_NUM_THREADS", false, env, d.problem)) env_name = "FUSEDRNN_NUM_THREADS";
  else if (env_threads("OMP_NUM_THREADS", true, env, d.problem)) env_name = "OMP_NUM_THREADS";
  if (env_name) {
    d.source = env_name;
    if (env < d.threads) d.threads = env;
    else d.source += " (capped at the usable CPUs)";
  }
  return d;
}

const ThreadDefault g_default = compute_default();
std::atomic<int> g_threads{g_default.threads};
std::atomic<bool> g_pool_started{false};
std::atomic<bool> g_forked_after_pool{false};

#if !defined(_WIN32)
// GNU OpenMP cannot start threads in a child forked after its pool existed (the child hangs in
// the first parallel region), so such a child runs the kernels on its calling thread.
void on_fork_child() {
  if (g_pool_started.load()) g_forked_after_pool.store(true);
}

const int g_atfork = pthread_atfork(nullptr, nullptr, on_fork_child);
#endif

// --- contention -----------------------------------------------------------------------------
// A wait counts as a stall when it exceeds the calling thread's own work by this much: far
// above a region's start-up cost (microseconds, tens when a sleeping thread must be woken),
// below a scheduler time slice (milliseconds).
constexpr int64_t kStallNs = 500'000;
// A stall sends the kernels to one thread only when two more came within the last
// kStallRegions regions.  A single stall is no proof of contention: on a virtual machine a core
// is now and then taken away for a millisecond, and answering each such stall with a fallback
// put short calls (an LSTM of (16, 24, 64, 64) training at 2 threads: 0.55 ms, 5 regions) on
// one thread most of the time (median 0.89 ms).  Nor is a pair: one such absence of 3 ms spans
// two consecutive regions (seen about once in a hundred calls of an LSTM (32, 60, 1, 100)
// training, its forward and backward regions both stalled).  Cores kept busy by another
// process stall again and again within a few regions.  The price: the first calls of such a
// spell run on two threads until the third stall (bench/results/threads_under_load.md: at
// most 1.31x one thread's time on the standard grid with the second stall, where the guard
// that fell back at every stall stayed within 1.11x; 8 regions instead of 32 let slower spells
// through, up to 1.9x).
constexpr int64_t kStallRegions = 32;
// Stalls in a process's first kWarmUpRegions regions do not count: those regions start the
// threads and are the first to touch the kernels' buffers, and on this VM their waits of 2-15
// ms came in pairs and sent the first tenth of a second of work to one thread in every
// process (an LSTM (32, 60, 1, 100) training at 2 threads: one fallback per process at its
// first calls, and no other in 300 calls that followed; a one-case benchmark then timed part
// or all of its calls on one thread).
constexpr int64_t kWarmUpRegions = 32;
constexpr int64_t kFirstBackoffNs = 100'000'000;   // 0.1 s on one thread after a fallback
constexpr int64_t kMaxBackoffNs = 3'200'000'000;   // doubling while the stalls go on

std::atomic<bool> g_guard{true};
std::atomic<int64_t> g_contended_until{0};
std::atomic<int64_t> g_backoff{kFirstBackoffNs};
std::atomic<int64_t> g_last_fallback{0};  // when the last fallback began
// g_regions at the last stall and at the one before it
std::atomic<int64_t> g_last_stall_region{-kStallRegions - 1}, g_earlier_stall_region{-kStallRegions - 1};
std::atomic<int64_t> g_regions{0}, g_stalls{0}, g_fallbacks{0};

// --- the pool ---------------------------------------------------------------------------------
// With OpenMP the split products run on the OpenMP team that also runs the time loops
// (parallel_for below): two pools on the same cores would fight, since the threads of one
// spin on the cores while the other's work.  Builds without OpenMP use this pool instead.
#if !defined(_OPENMP)
// How a thread with nothing to do waits: spinning keeps it ready for the next product of a
// time loop (a few tens of microseconds away), yielding lets another runnable thread have the
// core, sleeping stops costing anything.
constexpr int64_t kSpinNs = 50'000;
constexpr int64_t kYieldNs = 1'000'000;

// One job at a time, described by a single word so that claiming an index is one
// compare-and-swap: [generation:32 | n:16 | next:16].  A worker that read the word of a job
// that has since finished cannot claim anything: its compare-and-swap fails.
constexpr uint64_t kMaxIndices = 0xFFFF;
uint64_t pack(uint64_t gen, uint64_t n, uint64_t next) { return gen << 32 | n << 16 | next; }
uint64_t gen_of(uint64_t s) { return s >> 32; }
uint64_t n_of(uint64_t s) { return (s >> 16) & 0xFFFF; }
uint64_t next_of(uint64_t s) { return s & 0xFFFF; }

class Pool {
 public:
  // Never destroyed: workers may still be waiting when the interpreter shuts down.
  static Pool& get() {
    static Pool* p = new Pool;
    return *p;
  }

  // False when another thread is using the pool or no worker could be started.
  bool try_run(int64_t n, int threads, IndexBody body, void* ctx) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    note_pool_started();
    start_workers(threads - 1);
    const int helpers = std::min(threads - 1, started_);
    if (helpers < 1) return false;
    body_.store(body, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    helpers_.store(helpers, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint64_t fresh = pack(gen_of(state_.load(std::memory_order_relaxed)) + 1, n, 0);
    state_.store(fresh, std::memory_order_seq_cst);  // publishes the stores above
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> hold(sleep_lock_);
      sleep_cv_.notify_all();
    }
    const int64_t t0 = now_ns();
    int64_t mine = 0;
    for (uint64_t s = fresh; next_of(s) < n_of(s);) {
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        body(ctx, static_cast<int64_t>(next_of(s)));
        ++mine;
        s = state_.load(std::memory_order_acquire);
      }
    }
    const int64_t t1 = now_ns();
    // Only the indices the workers claimed are left; wait for those.
    for (int i = 0; done_.load(std::memory_order_acquire) != n - mine; ++i) {
      if (i < 2000) cpu_relax();
      else std::this_thread::yield();
    }
    report_region(helpers + 1, t1 - t0, now_ns() - t1);
    return true;
  }

 private:
  void start_workers(int count) {
    if (started_ >= count) return;
#if !defined(_WIN32)
    // Workers take no signals: they go to the threads that run Python.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
#endif
    try {
      while (started_ < count) {
        std::thread(&Pool::work, this, started_).detach();
        ++started_;
      }
    } catch (...) {  // the system refused a thread: go on with the ones there are
    }
#if !defined(_WIN32)
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
#endif
  }

  void work(int index) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      const bool open = next_of(s) < n_of(s);
      if (open && index < helpers_.load(std::memory_order_relaxed)) {
        // Read before the claim: a successful claim proves they belong to this job.
        const IndexBody body = body_.load(std::memory_order_relaxed);
        void* const ctx = ctx_.load(std::memory_order_relaxed);
        if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
          body(ctx, static_cast<int64_t>(next_of(s)));
          done_.fetch_add(1, std::memory_order_release);
          s = state_.load(std::memory_order_acquire);
        }
        continue;
      }
      // Nothing to claim (or not asked to help with this job): wait for the next change,
      // respectively the next job.
      s = wait_for_change(s, open);
    }
  }

  uint64_t wait_for_change(uint64_t s, bool next_job_only) {
    auto changed = [&](uint64_t now) { return next_job_only ? gen_of(now) != gen_of(s) : now != s; };
    const int64_t t0 = now_ns();
    bool yielding = false;
    for (int i = 1;; ++i) {
      const uint64_t now = state_.load(std::memory_order_acquire);
      if (changed(now)) return now;
      if ((i & 63) == 0) {  // the clock now and then
        const int64_t waited = now_ns() - t0;
        if (waited > kYieldNs) break;
        yielding = waited > kSpinNs;
      }
      if (yielding) std::this_thread::yield();
      else cpu_relax();
    }
    std::unique_lock<std::mutex> hold(sleep_lock_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    uint64_t now;
    while (!changed(now = state_.load(std::memory_order_seq_cst))) sleep_cv_.wait(hold);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return now;
  }

  std::mutex busy_;  // held by the thread whose job the pool runs
  int started_ = 0;  // workers started (under busy_)
  alignas(64) std::atomic<uint64_t> state_{0};
  std::atomic<IndexBody> body_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> helpers_{0};  // workers 0 .. helpers_-1 take part in the current job
  alignas(64) std::atomic<int64_t> done_{0};  // indices the workers finished
  alignas(64) std::atomic<int> sleepers_{0};
  std::mutex sleep_lock_;
  std::condition_variable sleep_cv_;
};
#endif  // !_OPENMP

// The clock is read every `stride` calls of interrupt_requested(): the stride doubles while
// calls come less than kFastCallNs apart (loops of tiny steps) and halves when they do not.
constexpr int64_t kFastCallNs = 200'000;
constexpr int kMaxStride = 1024;

thread_local struct {
  InterruptPoll poll = nullptr;
  void* ctx = nullptr;
  int64_t next = 0, last = 0;
  int calls = 0, stride = 1;
  bool hit = false;
} t_interrupt;

}  // namespace

const ThreadDefault& thread_default() { return g_default; }

int cgroup_cpu_limit(const std::string& root) {
  std::string text;
  if (read_file(root + "/cpu.max", text)) {  // v2: "quota period" or "max period"
    std::istringstream s(text);
    std::string quota;
    long long period = 100000;
    s >> quota >> period;
    if (quota.empty() || quota == "max") return 0;
    char* end = nullptr;
    const long long q = std::strtoll(quota.c_str(), &end, 10);
    return *end == '\0' ? ceil_div_at_least_1(q, period) : 0;
  }
  for (const char* dir : {"/cpu", "/cpu,cpuacct", "/cpuacct,cpu", ""}) {  // v1
    std::string qt, pt;
    if (!read_file(root + dir + "/cpu.cfs_quota_us", qt) || !read_file(root + dir + "/cpu.cfs_period_us", pt))
      continue;
    return ceil_div_at_least_1(std::atoll(qt.c_str()), std::atoll(pt.c_str()));  // quota -1: none
  }
  return 0;
}

// "1024K", "2M", "524288" (bytes) -> bytes; 0 if not such a size.
int64_t parse_cache_size(const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || v <= 0) return 0;
  const char unit = *end;
  return unit == 'K' ? v << 10 : unit == 'M' ? v << 20 : (unit == '\0' || unit == '\n') ? v : 0;
}

int64_t l2_cache_bytes() {
  static const int64_t bytes = []() -> int64_t {
#if defined(_WIN32)
    DWORD len = 0;
    GetLogicalProcessorInformation(nullptr, &len);
    using Info = SYSTEM_LOGICAL_PROCESSOR_INFORMATION;
    std::vector<Info> info(len / sizeof(Info) + 1);
    if (len == 0 || !GetLogicalProcessorInformation(info.data(), &len)) return 0;
    for (size_t i = 0; i < len / sizeof(Info); ++i)
      if (info[i].Relationship == RelationCache && info[i].Cache.Level == 2 &&
          info[i].Cache.Type != CacheInstruction)
        return static_cast<int64_t>(info[i].Cache.Size);
    return 0;
#elif defined(__APPLE__)
    for (const char* name : {"hw.perflevel0.l2cachesize", "hw.l2cachesize"}) {
      int64_t v = 0;
      size_t n = sizeof v;
      if (sysctlbyname(name, &v, &n, nullptr, 0) == 0 && n == sizeof v && v > 0) return v;
    }
    return 0;
#else
#if defined(_SC_LEVEL2_CACHE_SIZE)
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (v > 0) return v;
#endif
    for (int i = 0; i < 8; ++i) {  // cpu0's level-2 data or unified cache
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
      std::string level, type, size;
      if (!read_file(dir + "level", level) || !read_file(dir + "type", type) ||
          !read_file(dir + "size", size))
        continue;
      if (std::atoi(level.c_str()) == 2 && type.rfind("Instruction", 0) != 0) return parse_cache_size(size);
    }
    return 0;
#endif
  }();
  return bytes;
}

int num_threads() {
  return g_forked_after_pool.load(std::memory_order_relaxed) ? 1 : g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n); }

bool threads_disabled_by_fork() { return g_forked_after_pool.load(); }

void note_pool_started() {
  if (!g_pool_started.load(std::memory_order_relaxed)) g_pool_started.store(true);
}

void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
  _mm_pause();
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
  __asm__ __volatile__("yield");
#endif
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int threads_now() {
  const int n = num_threads();
  if (n <= 1 || !g_guard.load(std::memory_order_relaxed)) return n;
  return now_ns() < g_contended_until.load(std::memory_order_relaxed) ? 1 : n;
}

void report_region(int threads, int64_t work_ns, int64_t wait_ns) {
  if (threads <= 1) return;
  const int64_t region = g_regions.fetch_add(1, std::memory_order_relaxed);
  if (wait_ns <= work_ns + kStallNs) return;
  g_stalls.fetch_add(1, std::memory_order_relaxed);
  if (region < kWarmUpRegions) return;
  const int64_t before = g_last_stall_region.exchange(region, std::memory_order_relaxed);
  const int64_t earlier = g_earlier_stall_region.exchange(before, std::memory_order_relaxed);
  if (region - earlier > kStallRegions) return;
  const int64_t now = now_ns();
  const int64_t last = g_last_fallback.exchange(now, std::memory_order_relaxed);
  int64_t backoff = g_backoff.load(std::memory_order_relaxed);
  // Stalls again soon after the last fallback ended: the contention goes on, wait longer
  // before the next try.  After a quiet while, start again from the shortest fallback.
  if (now - last < 2 * backoff + kFirstBackoffNs) backoff = std::min(kMaxBackoffNs, 2 * backoff);
  else backoff = kFirstBackoffNs;
  g_backoff.store(backoff, std::memory_order_relaxed);
  g_contended_until.store(now + backoff, std::memory_order_relaxed);
  g_fallbacks.fetch_add(1, std::memory_order_relaxed);
}

#if defined(_OPENMP)
// The OpenMP team claims indices one at a time, like the pool: a thread that loses its core
// leaves its share to the others.  The calling thread's wait at the end of the region (for
// the last indices the others claimed) goes to the contention guard.
void parallel_for(int64_t n, int threads, IndexBody body, void* ctx) {
  if (n <= 0) return;
  const int nt = static_cast<int>(std::min<int64_t>(threads, n));
  if (nt <= 1 || omp_in_parallel() || g_forked_after_pool.load()) {
    for (int64_t i = 0; i < n; ++i) body(ctx, i);
    return;
  }
  note_pool_started();
  std::atomic<int64_t> next{0};
  int team = 1;
  int64_t t0 = now_ns(), t1 = t0;
#pragma omp parallel num_threads(nt)
  {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed))
      body(ctx, i);
    if (omp_get_thread_num() == 0) {
      team = omp_get_num_threads();
      t1 = now_ns();
    }
  }
  if (team > 1) report_region(team, t1 - t0, now_ns() - t1);
}
#else
void parallel_for(int64_t n, int threads, IndexBody body, void* ctx) {
  if (n <= 0) return;
  if (threads > 1 && n > 1 && static_cast<uint64_t>(n) <= kMaxIndices &&
      Pool::get().try_run(n, static_cast<int>(std::min<int64_t>(threads, n)), body, ctx))
    return;
  for (int64_t i = 0; i < n; ++i) body(ctx, i);
}
#endif

void set_contention_guard(bool on) {
  g_guard.store(on);
  if (!on) g_contended_until.store(0);
}

ContentionStats contention_stats() {
  ContentionStats s;
  s.regions = g_regions.load();
  s.stalls = g_stalls.load();
  s.fallbacks = g_fallbacks.load();
  s.contended = now_ns() < g_contended_until.load();
  return s;
}

InterruptScope::InterruptScope(InterruptPoll poll, void* ctx)
    : saved_poll_(t_interrupt.poll), saved_ctx_(t_interrupt.ctx) {
  t_interrupt.poll = poll;
  t_interrupt.ctx = ctx;
  t_interrupt.last = now_ns();
  t_interrupt.next = t_interrupt.last + kPollIntervalNs;  // calls shorter than that never poll
  t_interrupt.calls = 0;
  t_interrupt.stride = 1;
  t_interrupt.hit = false;
}

InterruptScope::~InterruptScope() {
  t_interrupt.poll = saved_poll_;
  t_interrupt.ctx = saved_ctx_;
  t_interrupt.hit = false;
}

bool interrupt_requested(bool before_long_work) {
  auto& s = t_interrupt;
  if (!s.poll) return false;
  if (s.hit) return true;
  if (++s.calls < s.stride && !before_long_work) return false;
  const int calls = s.calls;
  s.calls = 0;
  const int64_t t = now_ns();
  const int64_t per_call = (t - s.last) / calls;
  s.last = t;
  if (per_call * kMaxStride < kFastCallNs) s.stride = kMaxStride;
  else if (per_call * s.stride * 2 < kFastCallNs) s.stride *= 2;
  else if (s.stride > 1 && per_call * s.stride > 2 * kFastCallNs) s.stride /= 2;
  if (t < s.next) return false;
  s.next = t + kPollIntervalNs;
  s.hit = s.poll(s.ctx);
  return s.hit;
}

}  // namespace fusedrnn
