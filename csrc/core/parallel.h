// Core (framework-free C++17): the threading interface the host supplies.
//
// The core never creates threads itself: inside a TF op the adapter wraps TF's intra-op pool, in the
// pybind module a ThreadPool of our own (threadpool.h). for_each(n, cost, fn) calls fn(begin, end) on
// disjoint sub-ranges covering [0, n), possibly concurrently, and returns when all are done.
#pragma once

#include <cstdint>
#include <functional>

namespace pcf {

using RangeFn = std::function<void(int64_t begin, int64_t end)>;

class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual int num_threads() const = 0;
  // cost_per_unit: rough cycles per unit of work, for hosts that size shards by cost (TF does).
  virtual void for_each(int64_t n, int64_t cost_per_unit, const RangeFn& fn) const = 0;
  // How many units of for_each(n <= this, ...) are promised to run at once, each on its own thread, so that
  // they may wait for each other (a Team, team.h). 1 (the default): none may wait; a host pool that can run
  // the units one after another on one thread (TF's) must say so.
  virtual int team_threads() const { return 1; }
};

class SerialParallel final : public Parallel {
 public:
  int num_threads() const override { return 1; }
  void for_each(int64_t n, int64_t, const RangeFn& fn) const override {
    if (n > 0) fn(0, n);
  }
};

}  // namespace pcf
