// The packed time loop (float and double, wherever simd.h has FUSEDRNN_PACKED_LOOP): weights
// packed once per call, threads that split the blocks of hidden units, GEMM and elementwise
// fused per block.
//
// Why it is shaped this way:
// * Rows of a batch are independent but hidden units are not (every unit of h feeds every gate),
//   so threads split the gate columns.  The weight columns are packed interleaved per block of
//   U units ([i f g o] of units j0..j0+U-1 side by side), so the thread that computes a block's
//   gate pre-activations also applies the cell to them while they are in cache.  One barrier
//   per step publishes the new h.  In the forward each thread owns a share of the blocks but
//   takes over what is left of a slower thread's share at every step (PanelClaims).
// * Backward splits dh by units the same way: a thread turns its units' dh into their gate
//   gradients, a barrier publishes the step's gate gradients, and each thread multiplies them
//   by its own columns of W_hh.  Consecutive steps' gate gradients lie in different rows (the
//   whole-sequence buffer's, or buffers of the step's parity where rows are at different time
//   indices), so the next step's elementwise pass can start while the other thread still reads
//   the previous one.
// * The input projection is computed by the same packed kernel in chunks of steps inside the
//   parallel region (no BLAS threads compete with the loop); dx and the whole-sequence weight
//   gradients after the loop run on the same packed kernel (packed_products.h).
#pragma once

#include "simd.h"

#if FUSEDRNN_PACKED_LOOP

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <thread>
#include <type_traits>
#include <vector>

#include "omp_compat.h"
#include "blas.h"
#include "kernels.h"
#include "fusedrnn/common.h"
#include "threading.h"
#include "packed_cache.h"
#include "packed_gemm.h"
#include "packed_products.h"

namespace fusedrnn::cpu::FUSEDRNN_ISA {

// The barrier between steps.  A waiting thread spins briefly, then yields the CPU but stays
// runnable.  (A barrier that sleeps in the kernel must be woken, and on a machine where another
// process holds the core that wake-up waits for a whole scheduler time slice -- at every step.)
class StepBarrier {
 public:
  // Called by one thread of the team, before anyone waits.
  void reset(int threads) {
    threads_ = threads;
    arrived_.store(0, std::memory_order_relaxed);
  }
  void wait() {
    const int gen = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == gen; ++spins) {
      // A short spin, then yield: on an idle core the yield returns at once and the poll goes
      // on; on a core shared with the thread being waited for it hands that thread the core
      // (a long spin there would burn its time slice at every step).
      if (spins < 256) fusedrnn::cpu_relax();
      else std::this_thread::yield();
    }
  }

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
  int threads_ = 1;
};

template <typename T>
inline void add_row(T* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
}
template <typename T>
inline void sum_row(T* __restrict dst, const T* a, const T* b, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = a[j] + b[j];
}

// A state buffer of the time loops (h, c and their gradients, rows of B), zero-filled and
// 64-byte aligned: the cells load and store its rows a vector at a time, and rows that start
// on a cache line keep those accesses within one line.  In a std::vector (16-byte aligned)
// most vectors straddled two lines, and the copy of each row's h' to the output stalled on
// the cell's split stores: 5.2% of an LSTM (32, 100, 256, 256) forward's samples at 2 threads
// (AVX-512), 1.5% aligned; the forward ran 0.5-2% faster (builds alternated), same results.
template <typename T>
packed::Buffer<T> state_rows(int64_t n, const char* purpose) {
  packed::Buffer<T> b(static_cast<size_t>(n), purpose);
  b.zero();
  return b;
}

// Rows per input-projection chunk of the packed forward (projection_chunk).  A chunk's
// projection is computed at its first step and then read one step at a time, so a chunk that
// outgrows L2 sends those reads to L3; 256 rows still stream each packed W_ih panel once for a
// good many rows.  Measured on AVX2 (LSTM training forward, 2 threads, alternating builds): 1024
// rows were 7% slower at (B, T, I, H) = (16, 100, 64, 64), 10% at (32, 100, 256, 256), and no
// faster at (64, 50, 512, 512) or (16, 50, 1024, 1024).  The products sum their K terms in the
// same order whatever the rows: results do not change.
constexpr int64_t kPackedProjectionRows = 256;

// What a parallel time loop shares besides its barrier: the step at which the calling thread
// saw an interrupt (every thread leaves after that step's barrier, so all leave together), and
// how long the calling thread worked and waited (for the contention guard, threading.h).
struct LoopControl {
  std::atomic<int64_t> stop_step{-1};
  int64_t start = 0, waited = 0;

  // The calling thread (tid 0) only: poll for an interrupt before the barrier of step s.
  void poll(int tid, int64_t s) {
    if (tid == 0 && fusedrnn::interrupt_requested()) stop_step.store(s, std::memory_order_relaxed);
  }
  void wait(StepBarrier& barrier, int tid) {
    if (tid != 0) return barrier.wait();
    const int64_t t0 = fusedrnn::now_ns();
    barrier.wait();
    waited += fusedrnn::now_ns() - t0;
  }
  // After the barrier of step s (the barrier orders the store before every thread's load).
  bool stop(int64_t s) const { return stop_step.load(std::memory_order_relaxed) == s; }
  // The calling thread's share of n blocks split over nt threads (for finish()).
  int64_t own = 0, most = 0;
  void note_share(int tid, int64_t n, int nt, int64_t begin, int64_t end) {
    if (tid != 0) return;
    own = end - begin;
    most = (n + nt - 1) / nt;
  }
  // After the region, on the calling thread.  The shares are fixed, so on free cores the
  // calling thread waits only for the larger shares' extra blocks; on a core it shares with
  // another thread of the team it also waits for that thread's whole share.  A wait beyond
  // the expected one plus half its own work counts as a stall (threading.h).
  void finish(int threads) {
    const int64_t work = fusedrnn::now_ns() - start - waited;
    const int64_t expected = own > 0 ? work * (most - own) / own : 0;
    fusedrnn::report_region(threads, expected + work / 2, waited);
    if (stop_step.load() >= 0) throw fusedrnn::Interrupted();
  }
};

// Contiguous share [begin, end) of n items for thread tid of nt.
inline void share(int64_t n, int tid, int nt, int64_t& begin, int64_t& end) {
  begin = n * tid / nt;
  end = n * (tid + 1) / nt;
}

// Whether panels of nr units split n units (or columns) over `threads` threads within 12.5% of
// an even split.  The loops give each thread a contiguous share of whole panels (the forward
// then lets threads take over others' panels, whole panels too).
inline bool panels_balanced(int64_t n, int nr, int threads) {
  const int64_t np = (n + nr - 1) / nr;
  int64_t most = 0;
  for (int t = 0; t < threads; ++t) {
    int64_t b, e;
    share(np, t, threads, b, e);
    most = std::max(most, std::min(n, e * nr) - std::min(n, b * nr));
  }
  return most * 8 <= (n + threads - 1) / threads * 9;
}

// The panels of a step, claimed one at a time: each thread runs its own share first (its
// weights are likely still in its cache), then helps with what is left of the others' shares,
// so a thread slowed down (another process on its core) no longer holds the team up at every
// step's barrier.  Whoever runs a panel computes it the same way, so results do not depend on
// who ran what.  The counters come in two sets, by step parity: a thread resets its counter
// for the next step during this one, when no thread claims from it.
class PanelClaims {
 public:
  explicit PanelClaims(int threads) : next_(2 * static_cast<size_t>(threads)) {}
  // Before the first step (a barrier must follow before anyone claims).
  void reset(int tid, int64_t first) {
    next_[2 * tid].v.store(first, std::memory_order_relaxed);
    next_[2 * tid + 1].v.store(first, std::memory_order_relaxed);
  }
  // Runs body(p) for panels of [0, n) until none of step s is left unclaimed.
  template <class Body>
  void run(int64_t s, int tid, int team, int64_t n, Body&& body) {
    const int par = static_cast<int>(s & 1);
    for (int i = 0; i < team; ++i) {
      const int o = (tid + i) % team;
      int64_t begin, end;
      share(n, o, team, begin, end);
      std::atomic<int64_t>& next = next_[2 * o + par].v;
      if (next.load(std::memory_order_relaxed) >= end) continue;
      int64_t ran = 0;
      for (int64_t p; (p = next.fetch_add(1, std::memory_order_relaxed)) < end; ++ran) body(p);
      if (o != tid && ran > 0) panels_taken_over().fetch_add(ran, std::memory_order_relaxed);
    }
    int64_t begin, end;
    share(n, tid, team, begin, end);
    next_[2 * tid + (par ^ 1)].v.store(begin, std::memory_order_relaxed);
  }

 private:
  struct alignas(64) Slot {
    std::atomic<int64_t> v{0};
  };
  std::vector<Slot> next_;
};

// Threads worth using for a step of `flops`: below ~0.2 MFLOP a barrier costs more than it saves.
// One while the cores are found contended (threading.h).
inline int step_threads(int64_t flops) { return flops < 200000 ? 1 : fusedrnn::threads_now(); }
// The products of one step of the loops: x and h by the weights forward, dG by W_hh backward,
// and the projection's where there is one.
inline int64_t forward_step_flops(const Seq& q, int64_t G, bool proj) {
  return 2 * q.B * G * q.H * (q.P + q.I) + (proj ? 2 * q.B * q.P * q.H : 0);
}
inline int64_t backward_step_flops(const Seq& q, int64_t G, bool proj) {
  return 2 * q.B * G * q.H * q.P + (proj ? 2 * q.B * q.P * q.H : 0);
}
// step_threads, and at most one per block.
inline int threads_for(int64_t flops, int64_t blocks) {
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(step_threads(flops), blocks)));
  if (nt > 1) fusedrnn::note_pool_started();
  return nt;
}

// Whether the forward's projection goes to the threads by rows (each its share of the B rows,
// every panel of P) rather than by whole panels of nr columns: where the rows give the busiest
// thread less than 7/8 of the panels' work.  At 2 threads P = 48 or 64 is one panel, which one
// thread projected while the other waited: by rows, inference's fastest call was 6-10% faster
// (LSTM (16, 100, 64, 128) with P = 48 and 64, (32, 100, 256, 256) with P = 64; builds
// alternated), and 2-3% with P = 192 (3 panels: 2 against 1).  By rows, each thread reads all
// of W_hr: where whole panels split evenly, they stay the split.  Row tiles do not change how
// an element is summed: the results are the same either way.
inline bool proj_by_rows(int64_t B, int64_t P, int nr, int threads) {
  const int64_t panels = (P + nr - 1) / nr;
  const int64_t most = (panels + threads - 1) / threads;  // the busiest thread's panels (share)
  return (B + threads - 1) / threads * panels * 8 < B * most * 7;
}

// Units per forward panel: 16 of a gated cell, 64 of an RNN, or 32 of an RNN where 64 would
// split H unevenly over the threads a step runs on (step_threads) and 32 does not
// (panels_balanced; forward_entry in sequence.h).  A step's panels go to threads whole, so at 2
// threads an RNN with H = 192 in 3 panels of 64 ran one thread's 128 units against the other's
// 64 (RNN (32, 50, 64, 192) inference, builds alternated: 14% faster in 6 panels of 32).  Panels
// of 32 everywhere made H = 256 and 512 4-6% slower, and so a one-thread step keeps 64 (RNN
// (1, 100, 8, 192) inference at 2 threads: 8-11% faster than in panels of 32).  Results are the
// same either way.
template <class Cell>
inline constexpr int64_t kForwardUnits = Cell::kGates == 1 ? 64 : 16;

// Forward panels: U hidden units, all G gates of each (NR = G * U columns).  The last panel,
// where H is not a whole number of panels, may be a narrower one: 16, 32 or 48 columns, of u
// units of each gate, where G divides that width and u covers the units left (an LSTM with
// H = 100: 6 panels of 16 units and one of 4, 16 columns instead of 64).  Gate k of unit i of
// a panel sits in column k * u + i either way; only u differs.
template <class Cell, int64_t Units>
struct ForwardLayout {
  static constexpr int64_t G = Cell::kGates;
  static constexpr int64_t U = Units;  // hidden units per panel
  static constexpr int NR = static_cast<int>(G * U);  // columns per panel
  // Whether a narrower panel exists for this G (not for the GRU's 3 gates), and the columns of
  // the last panel, holding `left` units.
  static constexpr bool kNarrow = (16 < NR && 16 % G == 0) || (32 < NR && 32 % G == 0) ||
                                  (48 < NR && 48 % G == 0);
  static constexpr int last_width(int64_t left) {
    for (int w : {16, 32, 48})
      if (w < NR && w % G == 0 && w / G >= left) return w;
    return NR;
  }
};

// With the LSTM projection (w_hr) the cell's output hcore is projected to h = hcore W_hr^T: a
// second barrier per step publishes hcore, then each thread projects its own panels of 64 of
// the P columns of h, or, where whole panels would split P unevenly and the rows split better
// (proj_by_rows), its own rows of every panel.
// Units: per panel (kForwardUnits).
template <typename T, class Cell, bool Training, int64_t Units>
void fused_forward(const Seq& q, const Cell& cell, const Weights<T>& w, const ForwardArgs<T>& a) {
  using L = ForwardLayout<Cell, Units>;
  constexpr int64_t G = L::G, U = L::U;
  constexpr int NR = L::NR, NP = 64;
  const int64_t B = q.B, H = q.H, I = q.I, P = q.P, W = cell.width();
  const bool proj = w.w_hr != nullptr;
  const int64_t npan = (H + U - 1) / U, ld = npan * NR;
  const int last_nr = L::last_width(H - (npan - 1) * U);
  auto width = [&](int64_t p) { return p == npan - 1 ? last_nr : NR; };  // columns of panel p
  const int64_t nproj = proj ? (P + NP - 1) / NP : 0, ldp = nproj * NP;

  const int64_t chunk = projection_chunk(q, kPackedProjectionRows);
  // The packed weights: from the caller's cache when it holds this layout, packed into it when
  // it is still empty (and no other call is filling it), else packed into scratch.
  PackedCache* pc = a.packed;
  const PackedCache::Key key{int64_t(sizeof(T)), G, U, NR, packed::Shape<T, NR>::NB,
                             packed::Shape<T, NP>::NB, H, I, P, proj};
  const bool cached = pc && pc->holds(key);
  std::unique_lock<std::mutex> filling;
  if (pc && !cached) {
    filling = std::unique_lock<std::mutex>(pc->fill, std::try_to_lock);
    if (filling.owns_lock() && !pc->ready.load(std::memory_order_acquire)) {
      pc->wih = mem::Array<unsigned char>(npan * I * NR * sizeof(T), "packed input weights");
      pc->whh = mem::Array<unsigned char>(npan * P * NR * sizeof(T), "packed recurrent weights");
      pc->whr = mem::Array<unsigned char>(nproj * H * NP * sizeof(T), "packed projection weights");
    } else if (filling.owns_lock()) {
      filling.unlock();  // filled for another layout: leave it
    }
  }
  const bool fill = filling.owns_lock(), shared = cached || fill;
  packed::Buffer<T> wih_own(shared ? 0 : npan * I * NR, "packed input weights"),
      whh_own(shared ? 0 : npan * P * NR, "packed recurrent weights"),
      whr_own(shared ? 0 : nproj * H * NP, "packed projection weights"),
      xp(chunk * B * ld, "the input projection"), hp(B * ld, "the recurrent products"),
      hpr(proj ? B * ldp : 0, "the projected states"), hcore(proj ? B * H : 0, "the cell outputs");
  T* const wih = shared ? reinterpret_cast<T*>(pc->wih.data()) : wih_own.data();
  T* const whh = shared ? reinterpret_cast<T*>(pc->whh.data()) : whh_own.data();
  T* const whr = shared ? reinterpret_cast<T*>(pc->whr.data()) : whr_own.data();
  // A panel whose unit count is not a whole number of vectors (H not a multiple of the vector
  // width: the last panel) runs its cell on whole vectors too, so that its last units are not
  // scalar code (four units of an LSTM's H = 100 took about 8% of its forward that way).  The
  // cell then reads V - n % V units past the panel's own: the products' rows have them (a
  // panel's columns are NR wide), and the states and biases below get V elements of padding;
  // it writes to per-thread scratch, whose first n units are copied out.  The cell writes its
  // workspace rows H apart, so the padded units would overrun the next row where H is below
  // the rounded-up count: such panels (H < V, or an RNN's 50 units of 64) keep the plain loop,
  // and so do one or two units left over (measured: H = 50, 2 units, was 2% slower padded; 4
  // units, H = 20 and 100, 5-13% faster).
  constexpr int64_t V = 64 / static_cast<int64_t>(sizeof(T));
  const bool tails = H % V != 0;
  auto padded = [&](int64_t n) { return n % V > 2 && (n + V - 1) / V * V <= H; };
  packed::Buffer<T> h = state_rows<T>(B * P + V, "the hidden state"),
                    h_next = state_rows<T>(B * P + V, "the hidden state"),
                    c = state_rows<T>(Cell::kHasCell ? B * H + V : 0, "the cell state"),
                    c_next = state_rows<T>(Cell::kHasCell ? B * H + V : 0, "the cell state");
  std::copy(a.h0, a.h0 + B * P, h.data());
  if constexpr (Cell::kHasCell) std::copy(a.c0, a.c0 + B * H, c.data());
  zero_padding(q, a.out, P);
  if constexpr (Training) zero_padding(q, a.ws, W);
  const int nt = threads_for(forward_step_flops(q, G, proj), npan);
  const int64_t tail_ld = W + 2 * U;  // one thread's scratch: h', c' (U each), workspace rows
  packed::Buffer<T> bias_pad(tails ? 2 * (G * H + V) : 0, "padded biases"),
      tail_out(tails ? nt * tail_ld : 0, "scratch for the last units");
  T* const bih_pad = bias_pad.data();
  T* const bhh_pad = tails ? bias_pad.data() + G * H + V : nullptr;
  if (tails) {
    bias_pad.zero();
    std::copy(w.b_ih, w.b_ih + G * H, bih_pad);
    std::copy(w.b_hh, w.b_hh + G * H, bhh_pad);
    // A narrower last panel's products fill only the first last_nr columns of its slot; the
    // padded units may read past them, so the rest of the slot holds zeros, not stale memory.
    if (last_nr < NR) {
      const int64_t c0 = (npan - 1) * NR + last_nr, nc = NR - last_nr;
      for (int64_t r = 0; r < chunk * B; ++r) std::fill_n(xp.data() + r * ld + c0, nc, T(0));
      for (int64_t r = 0; r < B; ++r) std::fill_n(hp.data() + r * ld + c0, nc, T(0));
    }
  }

  StepBarrier barrier;
  LoopControl ctl;
  PanelClaims claims(nt);  // allocated here: nothing inside the region may throw
  int team = 1;
  ctl.start = fusedrnn::now_ns();

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    {
      team = omp_get_num_threads();  // the team may be smaller than asked for
      barrier.reset(team);
    }
    int64_t p0, p1, r0 = 0, r1 = 0;
    share(npan, tid, team, p0, p1);
    ctl.note_share(tid, npan, team, p0, p1);
    if (proj) share(nproj, tid, team, r0, r1);
    // The projection's share: rows [b0, b1) of every panel, or every row of panels [r0, r1).
    const bool by_rows = proj && proj_by_rows(B, P, NP, team);
    int64_t b0 = 0, b1 = B;
    if (by_rows) share(B, tid, team, b0, b1);
    claims.reset(tid, p0);
    // Panel p, column c = gate * u + i  <-  weight row gate * H + p * U + i.
    for (int64_t p = cached ? p1 : p0; p < p1; ++p) {
      const int64_t u = width(p) / G;
      auto col_row = [&](int c) -> int64_t {
        const int64_t unit = p * U + c % u;
        return unit < H ? (c / u) * H + unit : -1;
      };
      packed::with_width<NR>(width(p), [&](auto wd) {
        packed::pack_rows<T, decltype(wd)::value>(w.w_ih, I, I, col_row, wih + p * I * NR);
        packed::pack_rows<T, decltype(wd)::value>(w.w_hh, P, P, col_row, whh + p * P * NR);
      });
    }
    for (int64_t p = cached ? r1 : r0; p < r1; ++p)
      packed::pack_rows<T, NP>(w.w_hr, H, H, [&](int c) -> int64_t { return p * NP + c < P ? p * NP + c : -1; },
                               whr + p * H * NP);
    ctl.wait(barrier, tid);  // every panel is packed (a thread may run another's panels)
    T* hc = h.data();
    T* hn = h_next.data();
    T* cc = Cell::kHasCell ? c.data() : nullptr;
    T* cn = Cell::kHasCell ? c_next.data() : nullptr;
    int64_t next = 0, t0 = 0, chunk_rows = 0;  // the chunk in use: step after it, first x step, rows
    // This thread's share of hidden units [j0, j1) and of the columns of h [k0, k1): the same
    // without a projection, its projection panels' columns with one.  The per-row copies go
    // by these shares; the panels themselves go to whichever thread claims them.
    const int64_t j0 = p0 * U, j1 = std::min(H, p1 * U);
    const int64_t k0 = proj ? std::min(P, r0 * NP) : j0, k1 = proj ? std::min(P, r1 * NP) : j1;

    for (int64_t s = 0; s < q.T; ++s) {
      const bool chunk_start = s >= next;
      if (chunk_start) {
        const int64_t n = std::min(chunk, q.T - s);
        t0 = chunk == q.T ? 0 : (q.reverse ? q.T - s - n : s);
        next = chunk == q.T ? q.T : s + n;
        chunk_rows = n * B;
      }
      T* hout = proj ? hcore.data() : hn;  // the cell's h' [B, H]
      // Rows that have ended carry their state; the training workspace keeps h_prev.
      for (int64_t b = 0; b < B; ++b) {
        const int64_t t = q.time_of(s, b);
        if (t < 0) {
          copy_row(hn + b * P + k0, hc + b * P + k0, k1 - k0);
          if constexpr (Cell::kHasCell) copy_row(cn + b * H + j0, cc + b * H + j0, j1 - j0);
        } else if constexpr (Training) {
          copy_row(a.ws + (t * B + b) * W + cell.off_hprev() + k0, hc + b * P + k0, k1 - k0);
        }
      }
      // Panel p of this step: its share of the chunk's input projection (at the chunk's first
      // step), its recurrent product, and the cell for its units in every row.
      auto run_panel = [&](int64_t p) {
        const int64_t j = p * U, n = std::min(U, H - j);
        // The cell on every row, gate k of unit i at column k * u + i of the panel.  With pad
        // set (n units that are not whole vectors: see `tails` above) it runs m units, a whole
        // number of vectors, on the padded biases and states into this thread's scratch, and
        // copies out the first n.  Without, its code is the plain loop's.
        auto rows = [&](auto u, auto pad) {
          constexpr bool Pad = decltype(pad)::value;
          const int64_t m = Pad ? (n + V - 1) / V * V : n;
          T* const th = Pad ? tail_out.data() + tid * tail_ld : nullptr;  // h' of m <= U units
          T* const tc = Pad ? th + U : nullptr;      // c' of the m units
          T* const tw = Pad ? th + 2 * U : nullptr;  // workspace rows, H apart as in ws (m <= H)
          for (int64_t b = 0; b < B; ++b) {
            const int64_t t = q.time_of(s, b);
            if (t < 0) continue;
            const T* xrow = xp.data() + ((t - t0) * B + b) * ld;
            T* wrow = Training ? a.ws + (t * B + b) * W : nullptr;
            T* const h_dst = Pad ? th : hout + b * H + j;
            T* const c_dst = Pad ? tc : (Cell::kHasCell ? cn + b * H + j : nullptr);
            T* const w_dst = Pad ? tw : (Training ? wrow + j : nullptr);
            cell.template forward_row<Training>(
                m, xrow + p * NR, u, hp.data() + b * ld + p * NR, u, (Pad ? bih_pad : w.b_ih) + j,
                (Pad ? bhh_pad : w.b_hh) + j, hc + b * P + j,
                Cell::kHasCell ? cc + b * H + j : nullptr, h_dst, Cell::kHasCell ? c_dst : nullptr,
                Training ? w_dst : nullptr);
            if constexpr (Pad) {
              simd::copy_short(hout + b * H + j, th, n);
              if constexpr (Cell::kHasCell) simd::copy_short(cn + b * H + j, tc, n);
              if constexpr (Training)  // the rows the cell writes: those before h_prev
                for (int64_t r = 0; r < cell.off_hprev() / H; ++r)
                  simd::copy_short(wrow + r * H + j, tw + r * H, n);
            }
            if (!proj) copy_row(a.out + (t * B + b) * P + j, hn + b * P + j, n);
            else if (Training) copy_row(wrow + cell.off_hcore() + j, hout + b * H + j, n);
            // The line(s) of out this row's units write at the next step, asked for now: they
            // are a step away.  Fetched at the store instead, they held up the cell (a GRU at
            // (32, 100, 256), one thread: 12-25% of the cell's samples on that copy's store).
            // The workspace rows of a training forward, asked for the same way, made a small
            // LSTM's forward and backward 2-3% slower: not done.
            const int64_t tn = s + 1 < q.T ? q.time_of(s + 1, b) : -1;
            if (!proj && tn >= 0) simd::prefetch_write(a.out + (tn * B + b) * P + j, n);
          }
        };
        const int wp = width(p);
        if (!L::kNarrow || wp == NR) {  // the usual panel: its own code, with U a constant
          if (chunk_start)
            packed::panel_gemm<T, NR>(chunk_rows, I, a.x + t0 * B * I, I, wih + p * I * NR,
                                      xp.data() + p * NR, ld, false);
          packed::panel_gemm<T, NR>(B, P, hc, P, whh + p * P * NR, hp.data() + p * NR, ld, false);
          if (!padded(n)) rows(std::integral_constant<int64_t, U>(), std::false_type());
          else rows(std::integral_constant<int64_t, U>(), std::true_type());
        } else if constexpr (L::kNarrow) {  // a narrower last panel
          if (chunk_start)
            packed::panel_gemm_narrow<T, NR>(wp, chunk_rows, I, a.x + t0 * B * I, I, wih + p * I * NR,
                                             xp.data() + p * NR, ld, false);
          packed::panel_gemm_narrow<T, NR>(wp, B, P, hc, P, whh + p * P * NR, hp.data() + p * NR, ld, false);
          if (!padded(n)) rows(int64_t(wp / G), std::false_type());
          else rows(int64_t(wp / G), std::true_type());
        }
      };
      claims.run(s, tid, team, npan, run_panel);
      if (proj) {
        ctl.wait(barrier, tid);  // every unit of hcore is written
        for (int64_t p = by_rows ? 0 : r0; p < (by_rows ? nproj : r1); ++p)
          packed::panel_gemm<T, NP>(b1 - b0, H, hcore.data() + b0 * H, H, whr + p * H * NP,
                                    hpr.data() + b0 * ldp + p * NP, ldp, false);
        const int64_t c0 = by_rows ? 0 : k0, nc = by_rows ? P : k1 - k0;  // the columns it wrote
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t t = q.time_of(s, b);
          if (t < 0) continue;  // carried over above
          copy_row(hn + b * P + c0, hpr.data() + b * ldp + c0, nc);
          copy_row(a.out + (t * B + b) * P + c0, hn + b * P + c0, nc);
        }
      }
      std::swap(hc, hn);
      if constexpr (Cell::kHasCell) std::swap(cc, cn);
      ctl.poll(tid, s);
      ctl.wait(barrier, tid);
      if (ctl.stop(s)) break;
    }
    for (int64_t b = 0; b < B; ++b) {
      copy_row(a.h_n + b * P + k0, hc + b * P + k0, k1 - k0);
      if constexpr (Cell::kHasCell) copy_row(a.c_n + b * H + j0, cc + b * H + j0, j1 - j0);
    }
  }
  if (fill) {  // every panel was packed before the first step, interrupted or not
    pc->key = key;
    pc->ready.store(true, std::memory_order_release);
  }
  ctl.finish(team);
}

// The whole-sequence products after the backward loop on the packed kernel (not the BLAS).
struct PackedProducts {
  template <typename T, bool TA>
  static void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                   T* C, int64_t ldc) {
    packed::sequence_gemm<T, TA>(M, N, K, A, lda, B, ldb, C, ldc);
  }
  // Both products in one pass: A is copied once per chunk for the two (packed_products.h).
  template <typename T>
  static void gemm_pair_at(int64_t M, int64_t K, const T* A, int64_t lda, const T* B1, int64_t ldb1,
                           int64_t N1, T* C1, int64_t ldc1, const T* B2, int64_t ldb2, int64_t N2, T* C2,
                           int64_t ldc2) {
    const packed::Operand<T> ops[2] = {{B1, ldb1, N1, C1, ldc1}, {B2, ldb2, N2, C2, ldc2}};
    packed::sequence_products<T, true>(M, K, A, lda, ops, 2);
  }
};

// NR: units per panel (columns of W_hh, and of W_hr with a projection); see fused_backward.
//
// With the LSTM projection (h' = hcore W_hr^T, P columns) a step has two phases, as in the
// forward: each thread adds dout to its own columns of dh (a barrier publishes them), turns
// them into d hcore = dh W_hr for its own units and those into gate gradients (a second barrier
// publishes these), then computes its own columns of the next dh = dG W_hh.
template <typename T, class Cell, int NR>
void fused_backward_panels(const Seq& q, const Cell& cell, const Weights<T>& w, const BackwardArgs<T>& a) {
  constexpr int64_t G = Cell::kGates;
  constexpr int64_t U = NR;
  const int64_t B = q.B, H = q.H, P = q.P, GH = G * H, W = cell.width(), TB = q.T * B;
  const bool proj = w.w_hr != nullptr;
  // Panels of units (the cell's H) and of the columns of h (P; the same panels without a
  // projection).
  const int64_t npan = (H + U - 1) / U, nhp = proj ? (P + U - 1) / U : npan;
  const int64_t ldh = nhp * U, ldu = npan * U;

  // Gate gradients [T, B, G*H]: every reached row is written below, so only the padded rows
  // need zeros (the whole-sequence GEMMs read them).  The same for dht, the gradient reaching
  // each step's h' [T, B, P] (dW_hr's rows).
  packed::Buffer<T> dgi(TB * GH, "gate gradients"),
      dgh_own(Cell::kSeparateDgh ? TB * GH : 0, "gate gradients"),
      dht(proj ? TB * P : 0, "projection gradients");
  T* dgh = Cell::kSeparateDgh ? dgh_own.data() : dgi.data();
  zero_padding(q, dgi.data(), GH);
  if constexpr (Cell::kSeparateDgh) zero_padding(q, dgh, GH);
  if (proj) zero_padding(q, dht.data(), P);
  zero_row(a.db_ih, GH);
  zero_row(a.db_hh, GH);
  const bool uniform = q.time_uniform();
  packed::Buffer<T> whh(nhp * GH * U, "packed recurrent weights"),
      whr(proj ? npan * P * U : 0, "packed projection weights"),
      step0(uniform ? 0 : B * GH, "step gradients"), step1(uniform ? 0 : B * GH, "step gradients"),
      dtot_rows(proj ? B * ldh : 0, "step gradients"),
      dcore(proj ? B * ldu : 0, "step gradients");
  packed::Buffer<T> dh = state_rows<T>(B * ldh, "the state gradients"),
                    dh_next = state_rows<T>(B * ldh, "the state gradients"),
                    dc = state_rows<T>(Cell::kHasCell ? B * H : 0, "the state gradients"),
                    dc_next = state_rows<T>(Cell::kHasCell ? B * H : 0, "the state gradients");
  for (int64_t b = 0; b < B; ++b) copy_row(dh.data() + b * ldh, a.dh_n + b * P, P);
  if constexpr (Cell::kHasCell) std::copy(a.dc_n, a.dc_n + B * H, dc.data());
  const int nt = threads_for(backward_step_flops(q, G, proj), std::max(npan, nhp));
  // Allocated before the parallel region: nothing inside it may throw.
  packed::Buffer<T> dtot_all(ldu, "step gradients");
  StepBarrier barrier;
  LoopControl ctl;
  int team = 1;
  ctl.start = fusedrnn::now_ns();

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    {
      team = omp_get_num_threads();
      barrier.reset(team);
    }
    // Shares: units [j0, j1) of panels [p0, p1), and columns of h [k0, k1) of panels [h0, h1).
    int64_t p0, p1, h0, h1;
    share(npan, tid, omp_get_num_threads(), p0, p1);
    share(nhp, tid, omp_get_num_threads(), h0, h1);
    ctl.note_share(tid, npan, omp_get_num_threads(), p0, p1);
    // dh = dG W_hh: panel p holds columns p*U.. of W_hh [GH, P]; d hcore = dh W_hr: panel p
    // holds columns p*U.. of W_hr [P, H].  Each thread packs and uses only its own panels.
    // (The last panel, holding P - p*U < U columns, may be a narrower one: packed_gemm.h.)
    auto cols = [&](int64_t p) { return std::min<int64_t>(U, P - p * U); };
    for (int64_t p = h0; p < h1; ++p)
      packed::with_width<NR>(cols(p), [&](auto wd) {
        packed::pack_cols<T, decltype(wd)::value>(w.w_hh, P, GH, P, p * U, whh.data() + p * GH * U);
      });
    if (proj)
      for (int64_t p = p0; p < p1; ++p) packed::pack_cols<T, NR>(w.w_hr, H, P, H, p * U, whr.data() + p * P * U);
    const int64_t j0 = p0 * U, j1 = std::min(H, p1 * U), nj = j1 - j0;
    const int64_t k0 = h0 * U, k1 = std::min(P, h1 * U), nk = k1 - k0;
    T* dtot = dtot_all.data() + j0;  // this thread's units (without a projection)
    T* dhc = dh.data();
    T* dhn = dh_next.data();
    T* dcc = Cell::kHasCell ? dc.data() : nullptr;
    T* dcn = Cell::kHasCell ? dc_next.data() : nullptr;

    for (int64_t s = q.T - 1; s >= 0; --s) {
      // The step's gate gradients for dh = dG W_hh: where every row is at the same time index,
      // the rows of dgh themselves (those of finished rows are its zero padding); otherwise
      // gathered into a buffer of the step's parity.
      T* step = uniform ? dgh + q.time_at_step(s) * B * GH : (s & 1) ? step1.data() : step0.data();
      if (proj) {
        // The gradient reaching h' (own columns), kept for dW_hr; then d hcore (own units).
        for (int64_t b = 0; b < B; ++b) {
          const int64_t t = q.time_of(s, b);
          T* d = dtot_rows.data() + b * ldh;
          if (t < 0) {
            zero_row(d + k0, nk);
            continue;
          }
          const int64_t r = t * B + b;
          sum_row(d + k0, dhc + b * ldh + k0, a.dout + r * P + k0, nk);
          copy_row(dht.data() + r * P + k0, d + k0, nk);
        }
        ctl.wait(barrier, tid);  // every column of the step's dh
        for (int64_t p = p0; p < p1; ++p)
          packed::panel_gemm<T, NR>(B, P, dtot_rows.data(), ldh, whr.data() + p * P * U,
                                    dcore.data() + p * U, ldu, false);
      }
      if (nj > 0) {
        for (int64_t b = 0; b < B; ++b) {
          const int64_t t = q.time_of(s, b);
          T* srow = step + b * GH;
          if (t < 0) {  // finished rows pass their state gradient through untouched
            if (!proj) copy_row(dhn + b * ldh + j0, dhc + b * ldh + j0, nj);
            if constexpr (Cell::kHasCell) copy_row(dcn + b * H + j0, dcc + b * H + j0, nj);
            if (!uniform)
              for (int64_t g = 0; g < G; ++g) zero_row(srow + g * H + j0, nj);
            continue;
          }
          const int64_t r = t * B + b;
          const T* dcell = dtot;
          if (proj) {
            dcell = dcore.data() + b * ldu + j0;
          } else {
            sum_row(dtot, dhc + b * ldh + j0, a.dout + r * P + j0, nj);
            if constexpr (!Cell::kDirectPath) zero_row(dhn + b * ldh + j0, nj);
          }
          cell.backward_row(nj, a.ws + r * W + j0, dcell,
                            Cell::kHasCell ? dcc + b * H + j0 : nullptr, dgi.data() + r * GH + j0,
                            dgh + r * GH + j0, proj ? nullptr : dhn + b * ldh + j0,
                            Cell::kHasCell ? dcn + b * H + j0 : nullptr);
          // The workspace segments this row's units read at the next step, asked into L2 now:
          // a training forward's workspace is read back in reverse, long after it left the
          // caches (LSTM (16, 251, 64, 64) training, one thread, builds alternated: 3-4% faster
          // on AVX-512 and on AVX2, 1-2% at (32, 100, 256, 256)).  Asking for the next step's
          // gate-gradient rows for writing as well changed nothing measurable.
          if (const int64_t tp = s > 0 ? q.time_of(s - 1, b) : -1; tp >= 0)
            for (int64_t g = 0; g < Cell::kBackwardReads; ++g)
              simd::prefetch_read(a.ws + (tp * B + b) * W + g * H + j0, nj);
          for (int64_t g = 0; g < G; ++g) {
            const int64_t o = g * H + j0;
            if (!uniform) copy_row(srow + o, dgh + r * GH + o, nj);
            // Bias gradients are column sums of the gate gradients: each thread sums its own.
            add_row(a.db_ih + o, dgi.data() + r * GH + o, nj);
            if constexpr (Cell::kSeparateDgh) add_row(a.db_hh + o, dgh + r * GH + o, nj);
          }
        }
      }
      ctl.poll(tid, s);
      ctl.wait(barrier, tid);
      if (ctl.stop(s)) break;
      // Own columns of the next dh: added to the direct path without a projection (the cell
      // wrote it, or zeros), written whole with one.
      for (int64_t p = h0; p < h1; ++p) {
        if (cols(p) == U)
          packed::panel_gemm<T, NR>(B, GH, step, GH, whh.data() + p * GH * U, dhn + p * U, ldh, !proj);
        else
          packed::panel_gemm_narrow<T, NR>(cols(p), B, GH, step, GH, whh.data() + p * GH * U,
                                           dhn + p * U, ldh, !proj);
      }
      if (q.lengths)  // finished rows keep their gradient (0 * inf in W_hh must not reach it)
        for (int64_t b = 0; b < B; ++b)
          if (q.time_of(s, b) < 0) copy_row(dhn + b * ldh + k0, dhc + b * ldh + k0, nk);
      std::swap(dhc, dhn);
      if constexpr (Cell::kHasCell) std::swap(dcc, dcn);
    }
    for (int64_t b = 0; b < B; ++b) {
      copy_row(a.dh0 + b * P + k0, dhc + b * ldh + k0, nk);
      if constexpr (Cell::kHasCell) copy_row(a.dc0 + b * H + j0, dcc + b * H + j0, nj);
    }
  }
  ctl.finish(team);

  if constexpr (!Cell::kSeparateDgh) copy_row(a.db_hh, a.db_ih, GH);
  whole_sequence_gradients<T, Cell, PackedProducts>(q, cell, w, a, dgi.data(), dgh, /*bias_done=*/true);
  if (proj) {
    throw_if_interrupted(/*before_long_work=*/true);
    // dW_hr = sum over steps of dh'^T hcore
    PackedProducts::gemm<T, true>(P, H, TB, dht.data(), P, a.ws + cell.off_hcore(), W, a.dw_hr, H);
  }
}

// Panels of 64 units, or of 32 where H is small enough that 64 would leave a thread without
// one (H = 64 is a single panel of 64), or where 64 would split the units or the columns of h
// unevenly over the threads and 32 does not.  Each thread gets whole panels, so at 2 threads
// H = 192 in panels of 64 gave one thread twice the other's share of every step (LSTM and GRU
// (32, 50, 64, 192) training, builds alternated: 4.4% and 3.4% faster in panels of 32).  Panels
// of 16 balance H = 100 (48 and 52 units instead of 64 and 36) but were 5% slower: each panel
// reads the step's gate gradients again.  Panels of 48 are taken where neither 64 nor 32 is
// even and 48 is: H = 96 at 2 threads (2 x 48 instead of 3 x 32, so 48 units each instead of
// 64 and 32; LSTM and GRU (32, 50, 64, 96) training 6-7% faster, RNN 3%, builds alternated),
// and by the same rule H = 192 at 4 threads or 384 at 8.  The width changes who computes a
// column of dh, not how: every element is summed in the same order either way.
template <typename T, class Cell>
void fused_backward(const Seq& q, const Cell& cell, const Weights<T>& w, const BackwardArgs<T>& a) {
  const int threads = step_threads(backward_step_flops(q, Cell::kGates, w.w_hr != nullptr));
  auto even = [&](int nr) { return panels_balanced(q.H, nr, threads) && panels_balanced(q.P, nr, threads); };
  if (q.H > 128 && even(64)) fused_backward_panels<T, Cell, 64>(q, cell, w, a);
  else if (even(32)) fused_backward_panels<T, Cell, 32>(q, cell, w, a);
  else if (even(48)) fused_backward_panels<T, Cell, 48>(q, cell, w, a);
  else if (q.H > 128) fused_backward_panels<T, Cell, 64>(q, cell, w, a);
  else fused_backward_panels<T, Cell, 32>(q, cell, w, a);
}

}  // namespace fusedrnn::cpu::FUSEDRNN_ISA

#endif  // FUSEDRNN_PACKED_LOOP
