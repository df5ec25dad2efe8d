// CUDA (GPU kernels, plain C++ interface): the cached incremental sampler on the device. No TF or pybind11
// here: the bindings (csrc/python/cuda_module.cc) build the program on the host and call these.
//
// A DeviceProgram holds a FlatProgram's tables (kernels over live taps, constants, step table) in device
// memory, uploaded once. sample() launches ONE kernel per call: each block runs every position of a few
// images (flat::sample_images, csrc/core/flat_program.h), its threads splitting each step's outputs and
// synchronising between steps; the Philox uniforms and the draws happen on the device. Blocks never wait
// for each other (images are independent), so there is no grid-wide synchronisation and no host round
// trip per pixel. Ring caches are allocated per call on the stream (cudaMallocAsync) and zeroed, so calls
// on different streams do not share state.
//
// Every function enqueues on `stream` and returns "" or a message naming the CUDA call that failed.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>

#include "../core/flat_program.h"

namespace pcf {
namespace gpu {

class DeviceProgram {
 public:
  // Copies the tables to the current device (synchronously).
  static std::string create(FlatProgram host, std::unique_ptr<DeviceProgram>* out);
  ~DeviceProgram();
  DeviceProgram(const DeviceProgram&) = delete;
  DeviceProgram& operator=(const DeviceProgram&) = delete;

  const FlatProgram& host() const { return host_; }
  int device() const { return device_; }
  // Launch shape used when images_per_block / threads are 0: one block per SM until every SM has one,
  // then more images per block; threads: the widest step's work items, a multiple of 32 in [32, 256].
  int auto_images_per_block(int64_t n) const;
  int auto_threads(int images_per_block) const;

  // levels, margins (nullable): (n, H, W, C) device arrays. image_offset numbers the images for the
  // random numbers (as ColumnProgram::sample). known (nullable, (n, H, W, C) device, image completion): a
  // level >= 0 is written instead of drawn; the caller has checked it (checks::known_levels).
  std::string sample(int64_t n, uint64_t seed, float temperature, int64_t image_offset, int32_t* levels,
                     float* margins, int images_per_block, int threads, cudaStream_t stream,
                     const int32_t* known = nullptr) const;
  // head_out (n, H, W, head channels) with image (n, H, W, C) fed in.
  std::string teacher_forced(const float* image, int64_t n, float* head_out, int images_per_block, int threads,
                             cudaStream_t stream) const;

 private:
  DeviceProgram() = default;
  std::string launch(bool sampling, int64_t n, uint64_t seed, float temperature, int64_t image_offset,
                     int32_t* levels, float* margins, const int32_t* known, const float* image, float* head_out,
                     int images_per_block, int threads, cudaStream_t stream) const;

  FlatProgram host_;
  FlatView tables_;          // device pointers; ring fields are set per call
  void* memory_ = nullptr;   // one cudaMalloc block behind tables_
  int device_ = 0;
  int sm_count_ = 1;
};

}  // namespace gpu
}  // namespace pcf
