// TF adapter: the cached incremental sampler as TF ops, a thin wrapper over csrc/core/program_spec (text
// program -> ColumnProgram) and ColumnProgram::sample run on TF's intra-op pool (the GPU kernel, with the
// same checks from sampler_kernels.h, is sampler_op_gpu.cc).
//
// PixelcnnFastSample: the program is a string attr (fixed per graph node), its arrays are float inputs
// (so kernels, biases and label embeddings are graph tensors that follow the model's variables inside a
// tf.function or a Keras callback). The program is rebuilt from spec + arrays on every call: building
// packs the conv weights once (O(weights)), small against sampling (O(n x H x W x weights)), and a
// per-call program needs no locking when one kernel instance runs concurrently (ColumnProgram::prepare
// mutates). The spec is parsed once, in the constructor, so a malformed spec fails when the node is built.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

#include "../core/program_spec.h"
#include "sampler_kernels.h"
#include "tf_parallel.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

class SampleOp : public pcf_tf::SampleKernelBase {
 public:
  explicit SampleOp(OpKernelConstruction* ctx) : SampleKernelBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    pcf_tf::SampleCall call;
    OP_REQUIRES_OK(ctx, pcf_tf::PrepareSample(ctx, spec_, &call, /*flattenable=*/false));
    try {
      call.program.sample(call.n, call.seed, call.temperature, call.image_offset, call.levels->flat<int32>().data(), nullptr,
                          pcf_tf::TfParallel(ctx));
    } catch (const std::exception& e) {
      ctx->CtxFailure(errors::Internal("pixelcnn_fast sample: ", e.what()));
    }
  }
};

// Parses a spec and writes it back canonically: lets Python check a spec without arrays (and tests check
// that the Python writer and the C++ parser agree on every field).
class ProgramSpecCanonicalOp : public OpKernel {
 public:
  explicit ProgramSpecCanonicalOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& in = ctx->input(0);
    OP_REQUIRES(ctx, in.dims() == 0,
                errors::InvalidArgument("pixelcnn_fast program_spec_canonical: spec must be a scalar string, got "
                                        "shape ", in.shape().DebugString()));
    pcf::ProgramSpec spec;
    OP_REQUIRES_OK(ctx, pcf_tf::ParseSpec(std::string(in.scalar<tstring>()()), &spec));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<tstring>()() = pcf::format_program_spec(spec);
  }
};

}  // namespace

REGISTER_OP("PixelcnnFastSample")
    .Attr("spec: string")
    .Attr("N: int >= 0")
    .Input("consts: N * float")
    .Input("n: int64")
    .Input("seed: int64")
    .Input("temperature: float")
    .Input("image_offset: int64")
    .Output("levels: int32")
    .SetIsStateful()  // fixed seed => deterministic, but sampling must never be constant-folded or CSE'd away
    .SetShapeFn([](InferenceContext* c) {
      std::string text;
      TF_RETURN_IF_ERROR(c->GetAttr("spec", &text));
      pcf::ProgramSpec spec;
      TF_RETURN_IF_ERROR(pcf_tf::ParseSpec(text, &spec));
      int num;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &num));
      if (num != static_cast<int>(spec.inputs.size()))
        return errors::InvalidArgument("pixelcnn_fast sample: the spec declares ", spec.inputs.size(),
                                       " const arrays, got ", num);
      ShapeHandle unused;
      for (int k = 0; k < num; ++k) TF_RETURN_IF_ERROR(c->WithRank(c->input(k), 4, &unused));
      for (int k = num; k < num + 4; ++k) TF_RETURN_IF_ERROR(c->WithRank(c->input(k), 0, &unused));
      DimensionHandle nd = c->UnknownDim();
      if (const Tensor* t = c->input_tensor(num)) {
        const int64_t n = t->scalar<int64_t>()();
        const std::string err = pcf::checks::count("pixelcnn_fast sample", n);
        if (!err.empty()) return errors::InvalidArgument(err);
        nd = c->MakeDim(n);
      }
      c->set_output(0, c->MakeShape({nd, c->MakeDim(spec.height), c->MakeDim(spec.width),
                                     c->MakeDim(spec.channels)}));
      return OkStatus();
    })
    .Doc("Draws n images (levels int32 (n, H, W, C)) from a column program (spec, see csrc/core/program_spec.h) "
         "with the cached incremental executor; seed is read as uint64 bits; the images are image_offset .. "
         "image_offset + n - 1 of the seed's stream.");

REGISTER_OP("PixelcnnFastProgramSpecCanonical")
    .Input("spec: string")
    .Output("canonical: string")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return OkStatus();
    })
    .Doc("Parses a column-program spec and returns its canonical text (errors name the line and token).");

REGISTER_KERNEL_BUILDER(Name("PixelcnnFastSample")
                            .Device(DEVICE_CPU),
                        SampleOp);
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastProgramSpecCanonical").Device(DEVICE_CPU), ProgramSpecCanonicalOp);

}  // namespace tensorflow
