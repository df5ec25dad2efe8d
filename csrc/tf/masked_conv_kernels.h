// TF adapter (shared by the CPU and GPU kernels): the masked-conv ops' attributes, argument checks and
// problem setup, written once, and the op-kernel class template both devices register. A device supplies
// only `Run`: how to compute a problem that has already been checked and whose output is allocated
// (CpuDevice in masked_conv_ops.cc: csrc/core on TF's intra-op pool; GpuDevice in masked_conv_ops_gpu.cc:
// the csrc/cuda launchers on TF's compute stream).
#pragma once

#include <string>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

#include "../core/masked_conv.h"
#include "../core/tapset.h"

namespace pcf_tf {

// The three ops, in the order of their inputs: forward (x, kernel), gradient w.r.t. the input
// (input_shape, kernel, dy), gradient w.r.t. the filter (x, kernel_shape, dy).
enum class Pass { kForward, kBackpropInput, kBackpropFilter };

// Attributes shared by the three ops.
struct MaskAttrs {
  std::string mask_type, padding;
  int color_groups = 1, dh = 1, dw = 1;

  explicit MaskAttrs(tensorflow::OpKernelConstruction* ctx);
};

// A checked problem: tap set, geometry, the two inputs the pass reads and its allocated output.
//   forward:         a = x,  b = kernel, out = y
//   backprop input:  a = dy, b = kernel, out = dx
//   backprop filter: a = x,  b = dy,     out = dkernel
struct ConvProblem {
  pcf::TapSet taps;
  pcf::ConvGeometry geom;
  const float* a = nullptr;
  const float* b = nullptr;
  float* out = nullptr;
};

// Checks the inputs of `pass` (ranks, shape vectors, the core's shared check_mask_args and make_geometry,
// dy against the geometry), allocates the output and fills *p. Returns false with the error already set
// on ctx. Every device kernel goes through this one function.
bool PrepareProblem(tensorflow::OpKernelContext* ctx, const MaskAttrs& attrs, Pass pass, ConvProblem* p);

// "x [2,13,11,3], kernel [7,7,3,16]" (shape vectors with their values): for error messages.
std::string DescribeInputs(tensorflow::OpKernelContext* ctx, Pass pass);

// The kernel class every device registers: shared checks, then Device::Run.
template <Pass kPass, class Device>
class MaskedConvOp : public tensorflow::OpKernel {
 public:
  explicit MaskedConvOp(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx), attrs_(ctx) {}

  void Compute(tensorflow::OpKernelContext* ctx) override {
    ConvProblem p;
    if (!PrepareProblem(ctx, attrs_, kPass, &p)) return;
    Device::Run(ctx, kPass, p);
  }

 private:
  MaskAttrs attrs_;
};

}  // namespace pcf_tf
