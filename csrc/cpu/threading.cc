#include "fusedrnn/threading.h"

#include <atomic>
#include <thread>

namespace fusedrnn {
namespace {

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

std::atomic<int> g_threads{default_threads()};

}  // namespace

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n); }

}  // namespace fusedrnn
