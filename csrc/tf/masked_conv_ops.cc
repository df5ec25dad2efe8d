// TF adapter: op registrations (shape functions) and CPU kernels for the masked conv, thin wrappers over
// csrc/core that run it on TF's intra-op thread pool. Argument errors name the argument and the shapes.
// The argument checks defined here (PrepareProblem, masked_conv_kernels.h) are the ones the GPU kernels
// (masked_conv_ops_gpu.cc) run too.
#include <cctype>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

#include "../core/masked_conv.h"
#include "../core/tapset.h"
#include "masked_conv_kernels.h"
#include "tf_parallel.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

using pcf_tf::ConvProblem;
using pcf_tf::MaskedConvOp;
using pcf_tf::Pass;

Status RequireRank(const Tensor& t, int rank, const char* name) {
  if (t.dims() != rank)
    return errors::InvalidArgument("masked_conv2d: ", name, " must have rank ", rank, ", got shape ",
                                   t.shape().DebugString());
  return OkStatus();
}

Status RequireShapeVector(const Tensor& t, const char* name) {
  if (t.dims() != 1 || t.dim_size(0) != 4)
    return errors::InvalidArgument("masked_conv2d: ", name, " must be a vector of 4, got shape ",
                                   t.shape().DebugString());
  return OkStatus();
}

// Checks through the core's shared validator and builds the tap set and geometry.
Status MakeProblem(const pcf_tf::MaskAttrs& a, int64_t n, int64_t h, int64_t w, int64_t cin, int kh, int kw,
                   int64_t kernel_cin, int64_t cout, ConvProblem* p) {
  std::string err = pcf::check_mask_args(kh, kw, cin, kernel_cin, cout, a.mask_type, a.color_groups, a.dh, a.dw,
                                         a.padding);
  if (err.empty()) err = pcf::make_geometry(n, h, w, kh, kw, a.dh, a.dw, a.padding, &p->geom);
  if (!err.empty()) return errors::InvalidArgument("masked_conv2d: ", err);
  p->taps = pcf::TapSet::from_mask(kh, kw, cin, cout, pcf::parse_mask_type(a.mask_type), a.color_groups);
  return OkStatus();
}

Status PrepareForward(OpKernelContext* ctx, const pcf_tf::MaskAttrs& attrs, ConvProblem* p) {
  const Tensor& x = ctx->input(0);
  const Tensor& k = ctx->input(1);
  TF_RETURN_IF_ERROR(RequireRank(x, 4, "x (N, H, W, Cin)"));
  TF_RETURN_IF_ERROR(RequireRank(k, 4, "kernel (kh, kw, Cin, Cout)"));
  TF_RETURN_IF_ERROR(MakeProblem(attrs, x.dim_size(0), x.dim_size(1), x.dim_size(2), x.dim_size(3), k.dim_size(0),
                                 k.dim_size(1), k.dim_size(2), k.dim_size(3), p));
  const pcf::ConvGeometry& g = p->geom;
  Tensor* y = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({g.n, g.ho, g.wo, k.dim_size(3)}), &y));
  p->a = x.flat<float>().data();
  p->b = k.flat<float>().data();
  p->out = y->flat<float>().data();
  return OkStatus();
}

Status PrepareBackpropInput(OpKernelContext* ctx, const pcf_tf::MaskAttrs& attrs, ConvProblem* p) {
  const Tensor& input_shape = ctx->input(0);
  const Tensor& k = ctx->input(1);
  const Tensor& dy = ctx->input(2);
  TF_RETURN_IF_ERROR(RequireShapeVector(input_shape, "input_shape"));
  TF_RETURN_IF_ERROR(RequireRank(k, 4, "kernel (kh, kw, Cin, Cout)"));
  TF_RETURN_IF_ERROR(RequireRank(dy, 4, "dy (N, Ho, Wo, Cout)"));
  auto s = input_shape.vec<int32_t>();
  TF_RETURN_IF_ERROR(MakeProblem(attrs, s(0), s(1), s(2), s(3), k.dim_size(0), k.dim_size(1), k.dim_size(2),
                                 k.dim_size(3), p));
  const pcf::ConvGeometry& g = p->geom;
  if (!(dy.dim_size(0) == g.n && dy.dim_size(1) == g.ho && dy.dim_size(2) == g.wo && dy.dim_size(3) == k.dim_size(3)))
    return errors::InvalidArgument("masked_conv2d: dy must have shape [", g.n, ",", g.ho, ",", g.wo, ",",
                                   k.dim_size(3), "] for input shape [", s(0), ",", s(1), ",", s(2), ",", s(3),
                                   "] and kernel ", k.shape().DebugString(), ", got ", dy.shape().DebugString());
  Tensor* dx = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({s(0), s(1), s(2), s(3)}), &dx));
  p->a = dy.flat<float>().data();
  p->b = k.flat<float>().data();
  p->out = dx->flat<float>().data();
  return OkStatus();
}

Status PrepareBackpropFilter(OpKernelContext* ctx, const pcf_tf::MaskAttrs& attrs, ConvProblem* p) {
  const Tensor& x = ctx->input(0);
  const Tensor& kernel_shape = ctx->input(1);
  const Tensor& dy = ctx->input(2);
  TF_RETURN_IF_ERROR(RequireRank(x, 4, "x (N, H, W, Cin)"));
  TF_RETURN_IF_ERROR(RequireRank(dy, 4, "dy (N, Ho, Wo, Cout)"));
  TF_RETURN_IF_ERROR(RequireShapeVector(kernel_shape, "kernel_shape"));
  auto ks = kernel_shape.vec<int32_t>();
  TF_RETURN_IF_ERROR(MakeProblem(attrs, x.dim_size(0), x.dim_size(1), x.dim_size(2), x.dim_size(3), ks(0), ks(1),
                                 ks(2), ks(3), p));
  const pcf::ConvGeometry& g = p->geom;
  if (!(dy.dim_size(0) == g.n && dy.dim_size(1) == g.ho && dy.dim_size(2) == g.wo && dy.dim_size(3) == ks(3)))
    return errors::InvalidArgument("masked_conv2d: dy must have shape [", g.n, ",", g.ho, ",", g.wo, ",", ks(3),
                                   "] for x ", x.shape().DebugString(), ", got ", dy.shape().DebugString());
  Tensor* dk = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({ks(0), ks(1), ks(2), ks(3)}), &dk));
  p->a = x.flat<float>().data();
  p->b = dy.flat<float>().data();
  p->out = dk->flat<float>().data();
  return OkStatus();
}

// The CPU kernels: csrc/core on TF's intra-op thread pool.
struct CpuDevice {
  static void Run(OpKernelContext* ctx, Pass pass, const ConvProblem& p) {
    const pcf_tf::TfParallel par(ctx);
    switch (pass) {
      case Pass::kForward:
        pcf::masked_conv2d_forward(p.taps, p.geom, p.a, p.b, p.out, par);
        break;
      case Pass::kBackpropInput:
        pcf::masked_conv2d_backprop_input(p.taps, p.geom, p.a, p.b, p.out, par);
        break;
      case Pass::kBackpropFilter:
        pcf::masked_conv2d_backprop_filter(p.taps, p.geom, p.a, p.b, p.out, par);
        break;
    }
  }
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

REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2D").Device(DEVICE_CPU), MaskedConvOp<Pass::kForward, CpuDevice>);
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2DBackpropInput").Device(DEVICE_CPU).HostMemory("input_shape"),
                        MaskedConvOp<Pass::kBackpropInput, CpuDevice>);
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2DBackpropFilter").Device(DEVICE_CPU).HostMemory("kernel_shape"),
                        MaskedConvOp<Pass::kBackpropFilter, CpuDevice>);

}  // namespace tensorflow

namespace pcf_tf {

using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;

MaskAttrs::MaskAttrs(OpKernelConstruction* ctx) {
  std::vector<int32_t> dil;
  OP_REQUIRES_OK(ctx, ctx->GetAttr("mask_type", &mask_type));
  OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
  OP_REQUIRES_OK(ctx, ctx->GetAttr("color_groups", &color_groups));
  OP_REQUIRES_OK(ctx, ctx->GetAttr("dilations", &dil));
  OP_REQUIRES(ctx, dil.size() == 2,
              tensorflow::errors::InvalidArgument("dilations must have 2 entries (dh, dw), got ", dil.size()));
  dh = dil[0];
  dw = dil[1];
}

bool PrepareProblem(OpKernelContext* ctx, const MaskAttrs& attrs, Pass pass, ConvProblem* p) {
  absl::Status s;
  switch (pass) {
    case Pass::kForward:
      s = tensorflow::PrepareForward(ctx, attrs, p);
      break;
    case Pass::kBackpropInput:
      s = tensorflow::PrepareBackpropInput(ctx, attrs, p);
      break;
    case Pass::kBackpropFilter:
      s = tensorflow::PrepareBackpropFilter(ctx, attrs, p);
      break;
  }
  if (!s.ok()) ctx->CtxFailureWithWarning(__FILE__, __LINE__, s);  // what OP_REQUIRES_OK does
  return s.ok();
}

std::string DescribeInputs(OpKernelContext* ctx, Pass pass) {
  static const char* const kNames[3][3] = {
      {"x", "kernel", nullptr}, {"input_shape", "kernel", "dy"}, {"x", "kernel_shape", "dy"}};
  const char* const* names = kNames[static_cast<int>(pass)];
  std::string out;
  for (int i = 0; i < 3 && names[i] != nullptr && i < ctx->num_inputs(); ++i) {
    const tensorflow::Tensor& t = ctx->input(i);
    out += (i ? ", " : "") + std::string(names[i]) + " ";
    if (t.dtype() == tensorflow::DT_INT32 && t.dims() == 1) {  // a shape vector (host memory): its values
      auto v = t.vec<int32_t>();
      out += "[";
      for (int64_t j = 0; j < v.size(); ++j) out += (j ? "," : "") + std::to_string(v(j));
      out += "]";
    } else {
      out += t.shape().DebugString();
    }
  }
  return out;
}

}  // namespace pcf_tf
