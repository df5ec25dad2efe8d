// TF adapter (shared by the sampler op's CPU and GPU kernels): parsing the spec attr and turning the op's
// inputs into a built ColumnProgram plus the call's scalars, with the same checks and messages on both
// devices. The consts, n, seed, temperature and image_offset are host tensors on both (the GPU kernel registers them as
// HostMemory): a program is built on the host and, on the GPU, uploaded.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

#include "../core/checks.h"
#include "../core/column_program.h"
#include "../core/program_spec.h"

namespace pcf_tf {

// Parses the spec attr into *spec, turning the core's std::invalid_argument into InvalidArgument.
inline tensorflow::Status ParseSpec(const std::string& text, pcf::ProgramSpec* spec) {
  try {
    *spec = pcf::parse_program_spec(text);
  } catch (const std::invalid_argument& e) {
    return tensorflow::errors::InvalidArgument("pixelcnn_fast sample: bad spec attr: ", e.what());
  }
  return tensorflow::OkStatus();
}

inline tensorflow::Status RequireScalar(const tensorflow::Tensor& t, const char* what) {
  if (t.dims() != 0)
    return tensorflow::errors::InvalidArgument("pixelcnn_fast sample: ", what, " must be a scalar, got shape ",
                                               t.shape().DebugString());
  return tensorflow::OkStatus();
}

struct SampleCall {
  pcf::ColumnProgram program{1, 1, 1, {1}};
  int64_t n = 0;
  uint64_t seed = 0;
  float temperature = 1.0f;
  int64_t image_offset = 0;  // the call draws images image_offset .. image_offset + n - 1 of the seed's stream
  tensorflow::Tensor* levels = nullptr;  // allocated output (n, H, W, C) int32, on the kernel's device
};

// Checks the inputs, builds the program and allocates the output; an InvalidArgument naming what is wrong.
// flattenable: the GPU kernel flattens the program for the device (column_program.h).
inline tensorflow::Status PrepareSample(tensorflow::OpKernelContext* ctx, const pcf::ProgramSpec& spec,
                                        SampleCall* call, bool flattenable) {
  using tensorflow::errors::InvalidArgument;
  tensorflow::OpInputList consts;
  TF_RETURN_IF_ERROR(ctx->input_list("consts", &consts));
  const tensorflow::Tensor& n_t = ctx->input(consts.size());
  const tensorflow::Tensor& seed_t = ctx->input(consts.size() + 1);
  const tensorflow::Tensor& temp_t = ctx->input(consts.size() + 2);
  const tensorflow::Tensor& offset_t = ctx->input(consts.size() + 3);
  TF_RETURN_IF_ERROR(RequireScalar(n_t, "n"));
  TF_RETURN_IF_ERROR(RequireScalar(seed_t, "seed"));
  TF_RETURN_IF_ERROR(RequireScalar(temp_t, "temperature"));
  TF_RETURN_IF_ERROR(RequireScalar(offset_t, "image_offset"));
  call->n = n_t.scalar<int64_t>()();
  call->image_offset = offset_t.scalar<int64_t>()();
  call->seed = static_cast<uint64_t>(seed_t.scalar<int64_t>()());  // the bits of a uint64 seed
  call->temperature = temp_t.scalar<float>()();
  // The rules of checks.h, in the words every other front door uses; the output's shape is the spec's.
  const char* where = "pixelcnn_fast sample";
  for (const std::string& err : {pcf::checks::count(where, call->n), pcf::checks::temperature(where, call->temperature),
                                 pcf::checks::image_offset(where, call->image_offset, call->n)})
    if (!err.empty()) return InvalidArgument(err);
  if (consts.size() != static_cast<int>(spec.inputs.size()))
    return InvalidArgument("pixelcnn_fast sample: the spec declares ", spec.inputs.size(), " const arrays, got ",
                           consts.size());
  std::vector<pcf::ConstTensor> arrays(consts.size());
  for (int k = 0; k < consts.size(); ++k) {
    const tensorflow::Tensor& t = consts[k];
    if (t.dims() != 4)
      return InvalidArgument("pixelcnn_fast sample: consts[", k, "] (",
                             spec.inputs[k].is_kernel ? "a conv kernel (kh, kw, cin, cout)" : "a constant (n|1, H|1, W|1, C)",
                             ") must have rank 4, got shape ", t.shape().DebugString());
    pcf::ConstTensor& a = arrays[k];
    a.n = t.dim_size(0);
    a.h = t.dim_size(1);
    a.w = t.dim_size(2);
    a.c = t.dim_size(3);
    auto flat = t.flat<float>();
    a.data.assign(flat.data(), flat.data() + flat.size());
  }
  try {
    call->program = pcf::build_from_spec(spec, arrays, call->n, flattenable);
  } catch (const std::invalid_argument& e) {
    return InvalidArgument("pixelcnn_fast sample: consts do not fit the spec: ", e.what());
  }
  const std::string err = pcf::checks::memory(where, call->n, spec.height, spec.width, spec.channels,
                                             call->program.cache_floats_per_image());
  if (!err.empty()) return InvalidArgument(err);
  return ctx->allocate_output(0, tensorflow::TensorShape({call->n, spec.height, spec.width, spec.channels}),
                              &call->levels);
}

// The sampler op's kernels on both devices: the spec attr parsed once, when the node is built, so a
// malformed spec fails there.
class SampleKernelBase : public tensorflow::OpKernel {
 public:
  explicit SampleKernelBase(tensorflow::OpKernelConstruction* ctx) : tensorflow::OpKernel(ctx) {
    std::string text;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spec", &text));
    OP_REQUIRES_OK(ctx, ParseSpec(text, &spec_));
  }

 protected:
  pcf::ProgramSpec spec_;
};

}  // namespace pcf_tf
