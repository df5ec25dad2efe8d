// TF adapter: pcf::Parallel over TF's intra-op thread pool, so core work inside an op shares the threads
// TF sized for the session (inter/intra-op settings) instead of starting a pool of its own.
#pragma once

#include "tensorflow/core/framework/op_kernel.h"

#include "../core/parallel.h"

namespace pcf_tf {

class TfParallel final : public pcf::Parallel {
 public:
  explicit TfParallel(tensorflow::OpKernelContext* ctx)
      : workers_(ctx->device()->tensorflow_cpu_worker_threads()) {}
  int num_threads() const override { return workers_->num_threads; }
  void for_each(int64_t n, int64_t cost, const pcf::RangeFn& fn) const override {
    workers_->workers->ParallelFor(n, cost, [&fn](int64_t b, int64_t e) { fn(b, e); });
  }

 private:
  const tensorflow::DeviceBase::CpuWorkerThreads* workers_;
};

}  // namespace pcf_tf
