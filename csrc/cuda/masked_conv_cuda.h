// CUDA (GPU kernels, plain C++ interface): masked conv forward, gradient w.r.t. input and w.r.t. filter on
// device memory, NHWC float32, over the live taps of a TapSet only. No TF or pybind11 here: the bindings
// (csrc/python/cuda_module.cc) check arguments and call these launchers.
//
// Every launcher enqueues its work on `stream` and returns without waiting; it returns "" on success or a
// message naming the CUDA call that failed and CUDA's error string (never aborts). All pointers are device
// pointers on the current device; y, dx and dkernel are fully overwritten (dead kernel entries exactly 0).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "../core/masked_conv.h"
#include "../core/tapset.h"

namespace pcf {
namespace gpu {

std::string masked_conv2d_forward(const TapSet& taps, const ConvGeometry& g, const float* x, const float* kernel,
                                  float* y, cudaStream_t stream);

std::string masked_conv2d_backprop_input(const TapSet& taps, const ConvGeometry& g, const float* dy,
                                         const float* kernel, float* dx, cudaStream_t stream);

std::string masked_conv2d_backprop_filter(const TapSet& taps, const ConvGeometry& g, const float* x,
                                          const float* dy, float* dkernel, cudaStream_t stream);

}  // namespace gpu
}  // namespace pcf
