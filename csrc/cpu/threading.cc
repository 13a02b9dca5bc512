#include "threading.h"

#include <pthread.h>

#include <atomic>
#include <thread>

namespace fusedrnn {
namespace {

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

std::atomic<int> g_threads{default_threads()};
std::atomic<bool> g_pool_started{false};
std::atomic<bool> g_forked_after_pool{false};

// GNU OpenMP cannot start threads in a child forked after its pool existed (the child hangs in
// the first parallel region), so such a child runs the kernels on its calling thread.
void on_fork_child() {
  if (g_pool_started.load()) g_forked_after_pool.store(true);
}

const int g_atfork = pthread_atfork(nullptr, nullptr, on_fork_child);

}  // namespace

int num_threads() {
  return g_forked_after_pool.load(std::memory_order_relaxed) ? 1 : g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n); }

bool threads_disabled_by_fork() { return g_forked_after_pool.load(); }

void note_pool_started() {
  if (!g_pool_started.load(std::memory_order_relaxed)) g_pool_started.store(true);
}

}  // namespace fusedrnn
