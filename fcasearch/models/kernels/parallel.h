// Tasks over the intra-op threads with work stealing, for fcasearch's kernels.
//
// Why: at::parallel_for gives each thread a fixed share. On a shared host the two cores of a
// 2-vCPU machine run at different speeds from moment to moment (other tenants, the host's own
// work), and every parallel region then lasts as long as its slower thread: over an FcaFormer-L1
// forward the faster thread waited 2-4 ms of 21-25 ms at the regions' ends (measured with
// timestamps per region and thread on a 2-core AMD EPYC). Here each thread still starts on its
// own share of consecutive tasks, in order (so a thread's tasks share weights and halo rows as
// before), and a thread that finishes takes the other shares' last tasks, one at a time.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

namespace fcasearch_par {

// A share of tasks [lo, hi) in one word: its owner takes from the front and the others from the
// back, each with one compare-and-swap, so no task is taken twice or lost.
struct alignas(64) Share {
  std::atomic<uint64_t> range{0};
};

inline uint64_t pack(uint64_t lo, uint64_t hi) { return lo | (hi << 32); }
inline int64_t lo_of(uint64_t r) { return static_cast<int64_t>(r & 0xffffffffu); }
inline int64_t hi_of(uint64_t r) { return static_cast<int64_t>(r >> 32); }

// One thread's view: next() returns its own share's tasks in order, then others' from their
// ends, then -1.
class Tasks {
 public:
  Tasks(Share* shares, int64_t count, int64_t self) : s_(shares), n_(count), self_(self) {}

  int64_t next() {
    Share& own = s_[self_];
    uint64_t r = own.range.load(std::memory_order_relaxed);
    while (lo_of(r) < hi_of(r)) {
      if (own.range.compare_exchange_weak(r, pack(lo_of(r) + 1, hi_of(r)),
                                          std::memory_order_acq_rel)) {
        return lo_of(r);
      }
    }
    for (int64_t k = 1; k < n_; ++k) {
      Share& other = s_[(self_ + k) % n_];
      uint64_t o = other.range.load(std::memory_order_relaxed);
      while (lo_of(o) < hi_of(o)) {
        if (other.range.compare_exchange_weak(o, pack(lo_of(o), hi_of(o) - 1),
                                              std::memory_order_acq_rel)) {
          return hi_of(o) - 1;
        }
      }
    }
    return -1;
  }

 private:
  Share* s_;
  int64_t n_, self_;
};

// Runs f(tasks) once on each intra-op thread (on the calling thread alone where there is one, or
// inside a parallel region); f takes tasks 0..n-1 with tasks.next() until it returns -1. Each
// thread's first share is n / threads consecutive tasks.
template <class F>
void parallel_tasks(int64_t n, const F& f) {
  if (n <= 0) return;
  TORCH_CHECK(n < (int64_t{1} << 31), "parallel_tasks: too many tasks");
  const int64_t nt = at::in_parallel_region() ? 1 : std::min<int64_t>(at::get_num_threads(), n);
  std::unique_ptr<Share[]> shares(new Share[nt]);
  for (int64_t i = 0; i < nt; ++i) shares[i].range.store(pack(i * n / nt, (i + 1) * n / nt));
  if (nt == 1) {
    Tasks tasks(shares.get(), 1, 0);
    f(tasks);
    return;
  }
  at::parallel_for(0, nt, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Tasks tasks(shares.get(), nt, i);
      f(tasks);
    }
  });
}

}  // namespace fcasearch_par
