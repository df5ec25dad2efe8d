// Core (framework-free C++17): a small persistent thread pool for hosts without one (the pybind module).
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "parallel.h"

namespace pcf {

class ThreadPool final : public Parallel {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const override { return static_cast<int>(workers_.size()) + 1; }
  // Splits [0, n) into one contiguous range per thread; the calling thread takes the first.
  void for_each(int64_t n, int64_t cost_per_unit, const RangeFn& fn) const override;
  // for_each(n <= num_threads()) runs each unit on its own thread: the caller and dedicated workers.
  int team_threads() const override { return num_threads(); }

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  mutable std::mutex mu_;
  mutable std::mutex call_mu_;  // one for_each at a time: callers from several Python threads queue up
  mutable std::condition_variable wake_, done_;
  mutable const RangeFn* job_ = nullptr;
  mutable int64_t job_n_ = 0;
  mutable int64_t generation_ = 0;
  mutable int pending_ = 0;
  mutable bool stop_ = false;
};

}  // namespace pcf
