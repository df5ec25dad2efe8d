// TF adapter: whether resource variables still hold the bits of snapshots taken earlier -- the Sampler's build
// cache asks this on every sample call (pixelcnn_fast/sampler_cache.py).
//
// PixelcnnFastSameVariables compares each variable's buffer with its snapshot in place, under the variable's
// lock: no read op, no tf.function call. For keras.io right after a sample it takes 0.34-0.44 ms against
// 0.77-0.94 ms through a concrete function reading the variables (benchmarks/call_overhead.py, both in one
// process), most of that the function call with TF's caches cold; an eager op with 76 inputs costs ~50 us.
// Bits, not values: a NaN equals itself, -0.0 differs from 0.0 (as _core.same_bytes). String variables are not
// compared here (the Python side keeps its own path for them).
#include <cstring>
#include <string>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tensorflow {
namespace {

REGISTER_OP("PixelcnnFastSameVariables")
    .Input("variables: N * resource")
    .Input("snapshots: T")
    .Output("same: bool")
    .Attr("N: int >= 0")
    .Attr("T: list(type) >= 0")
    .SetIsStateful()  // reads the variables' current values: never constant-folded or cached
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return OkStatus();
    })
    .Doc("True when variable i holds a tensor of snapshot i's dtype and shape with the same bytes, for every i "
         "(a NaN equals itself, -0.0 differs from 0.0); false when one differs or is uninitialised. The lists "
         "must have equal lengths; string dtypes are refused, as is a variable the op's device cannot see.");

class SameVariablesOp : public OpKernel {
 public:
  explicit SameVariablesOp(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n_)); }

  void Compute(OpKernelContext* ctx) override {
    const int n = n_;
    OP_REQUIRES(ctx, num_inputs() == 2 * n,
                errors::InvalidArgument("PixelcnnFastSameVariables: ", num_inputs() - n,
                                        " snapshots for ", n, " variables; the lists must have equal lengths"));
    bool same = true;
    for (int i = 0; i < n && same; ++i) {
      const Tensor& snap = ctx->input(n + i);
      OP_REQUIRES(ctx, DataTypeCanUseMemcpy(snap.dtype()),
                  errors::InvalidArgument("PixelcnnFastSameVariables: snapshot ", i, " has dtype ",
                                          DataTypeString(snap.dtype()),
                                          ", whose bytes do not hold its value; compare it by value"));
      core::RefCountPtr<Var> var;
      // A variable on another device than the op's (the caller places it with them) or deleted: an error, which
      // the caller turns into its own comparison, never a silent "changed" on every call.
      OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, i), &var));
      tf_shared_lock lock(*var->mu());
      const Tensor* t = var->tensor();
      if (!var->is_initialized || t == nullptr || t->dtype() != snap.dtype() || t->shape() != snap.shape()) {
        same = false;
        break;
      }
      const StringPiece a = t->tensor_data(), b = snap.tensor_data();
      same = a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<bool>()() = same;
  }

 private:
  int n_ = 0;  // variables (attr N); the snapshots follow them
};

REGISTER_KERNEL_BUILDER(Name("PixelcnnFastSameVariables").Device(DEVICE_CPU), SameVariablesOp);

}  // namespace
}  // namespace tensorflow
