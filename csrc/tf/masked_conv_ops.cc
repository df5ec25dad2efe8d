// TF adapter: op registrations (shape functions) and CPU kernels for the masked conv, thin wrappers over
// csrc/core that run it on TF's intra-op thread pool. Argument errors name the argument and the shapes.
#include <cctype>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

#include "../core/masked_conv.h"
#include "../core/tapset.h"
#include "tf_parallel.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;


using pcf_tf::TfParallel;

// Attributes shared by the three ops.
struct MaskAttrs {
  std::string mask_type, padding;
  int color_groups = 1, dh = 1, dw = 1;

  explicit MaskAttrs(OpKernelConstruction* ctx) {
    std::vector<int32> dil;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mask_type", &mask_type));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("color_groups", &color_groups));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dilations", &dil));
    OP_REQUIRES(ctx, dil.size() == 2,
                errors::InvalidArgument("dilations must have 2 entries (dh, dw), got ", dil.size()));
    dh = dil[0];
    dw = dil[1];
  }

  // Checks through the core's shared validator and builds the tap set and geometry.
  Status problem(int64_t n, int64_t h, int64_t w, int64_t cin, int kh, int kw, int64_t kernel_cin, int64_t cout,
                 pcf::TapSet* taps, pcf::ConvGeometry* g) const {
    std::string err = pcf::check_mask_args(kh, kw, cin, kernel_cin, cout, mask_type, color_groups, dh, dw, padding);
    if (err.empty()) err = pcf::make_geometry(n, h, w, kh, kw, dh, dw, padding, g);
    if (!err.empty()) return errors::InvalidArgument("masked_conv2d: ", err);
    *taps = pcf::TapSet::from_mask(kh, kw, cin, cout, pcf::parse_mask_type(mask_type), color_groups);
    return OkStatus();
  }
};

Status RequireRank(const Tensor& t, int rank, const char* name) {
  if (t.dims() != rank)
    return errors::InvalidArgument("masked_conv2d: ", name, " must have rank ", rank, ", got shape ",
                                   t.shape().DebugString());
  return OkStatus();
}

class MaskedConv2DOp : public OpKernel {
 public:
  explicit MaskedConv2DOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& k = ctx->input(1);
    OP_REQUIRES_OK(ctx, RequireRank(x, 4, "x (N, H, W, Cin)"));
    OP_REQUIRES_OK(ctx, RequireRank(k, 4, "kernel (kh, kw, Cin, Cout)"));
    pcf::TapSet taps;
    pcf::ConvGeometry g;
    OP_REQUIRES_OK(ctx, attrs_.problem(x.dim_size(0), x.dim_size(1), x.dim_size(2), x.dim_size(3), k.dim_size(0),
                                       k.dim_size(1), k.dim_size(2), k.dim_size(3), &taps, &g));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.n, g.ho, g.wo, k.dim_size(3)}), &y));
    pcf::masked_conv2d_forward(taps, g, x.flat<float>().data(), k.flat<float>().data(), y->flat<float>().data(),
                               TfParallel(ctx));
  }

 private:
  MaskAttrs attrs_;
};

class MaskedConv2DBackpropInputOp : public OpKernel {
 public:
  explicit MaskedConv2DBackpropInputOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& input_shape = ctx->input(0);
    const Tensor& k = ctx->input(1);
    const Tensor& dy = ctx->input(2);
    OP_REQUIRES(ctx, input_shape.dims() == 1 && input_shape.dim_size(0) == 4,
                errors::InvalidArgument("masked_conv2d: input_shape must be a vector of 4, got shape ",
                                        input_shape.shape().DebugString()));
    OP_REQUIRES_OK(ctx, RequireRank(k, 4, "kernel (kh, kw, Cin, Cout)"));
    OP_REQUIRES_OK(ctx, RequireRank(dy, 4, "dy (N, Ho, Wo, Cout)"));
    auto s = input_shape.vec<int32>();
    pcf::TapSet taps;
    pcf::ConvGeometry g;
    OP_REQUIRES_OK(ctx, attrs_.problem(s(0), s(1), s(2), s(3), k.dim_size(0), k.dim_size(1), k.dim_size(2),
                                       k.dim_size(3), &taps, &g));
    OP_REQUIRES(ctx,
                dy.dim_size(0) == g.n && dy.dim_size(1) == g.ho && dy.dim_size(2) == g.wo &&
                    dy.dim_size(3) == k.dim_size(3),
                errors::InvalidArgument("masked_conv2d: dy must have shape [", g.n, ",", g.ho, ",", g.wo, ",",
                                        k.dim_size(3), "] for input shape [", s(0), ",", s(1), ",", s(2), ",", s(3),
                                        "] and kernel ", k.shape().DebugString(), ", got ", dy.shape().DebugString()));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({s(0), s(1), s(2), s(3)}), &dx));
    pcf::masked_conv2d_backprop_input(taps, g, dy.flat<float>().data(), k.flat<float>().data(),
                                      dx->flat<float>().data(), TfParallel(ctx));
  }

 private:
  MaskAttrs attrs_;
};

class MaskedConv2DBackpropFilterOp : public OpKernel {
 public:
  explicit MaskedConv2DBackpropFilterOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& kernel_shape = ctx->input(1);
    const Tensor& dy = ctx->input(2);
    OP_REQUIRES_OK(ctx, RequireRank(x, 4, "x (N, H, W, Cin)"));
    OP_REQUIRES_OK(ctx, RequireRank(dy, 4, "dy (N, Ho, Wo, Cout)"));
    OP_REQUIRES(ctx, kernel_shape.dims() == 1 && kernel_shape.dim_size(0) == 4,
                errors::InvalidArgument("masked_conv2d: kernel_shape must be a vector of 4, got shape ",
                                        kernel_shape.shape().DebugString()));
    auto ks = kernel_shape.vec<int32>();
    pcf::TapSet taps;
    pcf::ConvGeometry g;
    OP_REQUIRES_OK(ctx, attrs_.problem(x.dim_size(0), x.dim_size(1), x.dim_size(2), x.dim_size(3), ks(0), ks(1), ks(2),
                                       ks(3), &taps, &g));
    OP_REQUIRES(ctx,
                dy.dim_size(0) == g.n && dy.dim_size(1) == g.ho && dy.dim_size(2) == g.wo && dy.dim_size(3) == ks(3),
                errors::InvalidArgument("masked_conv2d: dy must have shape [", g.n, ",", g.ho, ",", g.wo, ",", ks(3),
                                        "] for x ", x.shape().DebugString(), ", got ", dy.shape().DebugString()));
    Tensor* dk = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({ks(0), ks(1), ks(2), ks(3)}), &dk));
    pcf::masked_conv2d_backprop_filter(taps, g, x.flat<float>().data(), dy.flat<float>().data(),
                                       dk->flat<float>().data(), TfParallel(ctx));
  }

 private:
  MaskAttrs attrs_;
};

// Output spatial size for one dimension, or unknown.
Status OutDim(InferenceContext* c, DimensionHandle in, int64_t k, int64_t d, bool same, DimensionHandle* out) {
  if (same || !c->ValueKnown(in) || k < 0) {
    *out = same ? in : c->UnknownDim();
    return OkStatus();
  }
  const int64_t o = c->Value(in) - ((k - 1) * d + 1) + 1;
  if (o < 1)
    return errors::InvalidArgument("masked_conv2d: padding='valid' needs an input at least as large as the dilated "
                                   "kernel extent ", (k - 1) * d + 1, ", got ", c->Value(in));
  *out = c->MakeDim(o);
  return OkStatus();
}

bool IsSame(InferenceContext* c) {
  std::string p;
  if (!c->GetAttr("padding", &p).ok()) return true;
  for (auto& ch : p) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return p == "same";
}

}  // namespace

#define PCF_MASK_ATTRS                                    \
  Attr("mask_type: string")                               \
      .Attr("color_groups: int = 1")                      \
      .Attr("dilations: list(int) = [1, 1]")              \
      .Attr("padding: string = 'same'")

REGISTER_OP("PixelcnnFastMaskedConv2D")
    .Input("x: float")
    .Input("kernel: float")
    .Output("y: float")
    .PCF_MASK_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, k;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &k));
      std::vector<int32> dil;
      TF_RETURN_IF_ERROR(c->GetAttr("dilations", &dil));
      if (dil.size() != 2) return errors::InvalidArgument("dilations must have 2 entries");
      const bool same = IsSame(c);
      auto kdim = [&](int i) { return c->ValueKnown(c->Dim(k, i)) ? c->Value(c->Dim(k, i)) : int64_t{-1}; };
      DimensionHandle ho, wo, unused;
      TF_RETURN_IF_ERROR(OutDim(c, c->Dim(x, 1), kdim(0), dil[0], same, &ho));
      TF_RETURN_IF_ERROR(OutDim(c, c->Dim(x, 2), kdim(1), dil[1], same, &wo));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 3), c->Dim(k, 2), &unused));
      c->set_output(0, c->MakeShape({c->Dim(x, 0), ho, wo, c->Dim(k, 3)}));
      return OkStatus();
    })
    .Doc("Masked 2-D convolution (PixelCNN mask A/B, colour groups) reading only the live taps of kernel.");

REGISTER_OP("PixelcnnFastMaskedConv2DBackpropInput")
    .Input("input_shape: int32")
    .Input("kernel: float")
    .Input("dy: float")
    .Output("dx: float")
    .PCF_MASK_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle s;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(0, &s));
      TF_RETURN_IF_ERROR(c->WithRank(s, 4, &s));
      c->set_output(0, s);
      return OkStatus();
    });

REGISTER_OP("PixelcnnFastMaskedConv2DBackpropFilter")
    .Input("x: float")
    .Input("kernel_shape: int32")
    .Input("dy: float")
    .Output("dkernel: float")
    .PCF_MASK_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle s;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(1, &s));
      TF_RETURN_IF_ERROR(c->WithRank(s, 4, &s));
      c->set_output(0, s);
      return OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2D").Device(DEVICE_CPU), MaskedConv2DOp);
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2DBackpropInput").Device(DEVICE_CPU).HostMemory("input_shape"),
                        MaskedConv2DBackpropInputOp);
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2DBackpropFilter").Device(DEVICE_CPU).HostMemory("kernel_shape"),
                        MaskedConv2DBackpropFilterOp);

}  // namespace tensorflow
