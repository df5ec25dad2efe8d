// TF adapter (GPU kernels): registers float32 GPU kernels for the three masked-conv ops. They run the
// argument checks the CPU kernels run (PrepareProblem, masked_conv_kernels.h), then the plain CUDA
// launchers of csrc/cuda/masked_conv_cuda.h on TF's compute stream for the op's device. No TF header
// reaches a .cu file: this file is compiled by the host compiler, the launchers by nvcc.
//
// Compiled to nothing unless GOOGLE_CUDA is set: setup.py sets it (and links the launchers' objects and a
// static cudart into _tf_ops.so) only when TF is a CUDA build and a suitable CUDA toolkit was found
// (build_info()["tf_gpu_kernels"] says which, or why not).
//
// Stream and context: TF's GPU device makes the device's primary context current before Compute
// (ScopedActivateContext in its ComputeHelper) and hands out its compute stream as a driver CUstream
// (Stream::platform_specific_handle, what TF's own GetGpuStream in gpu_kernel_helper.h reads). The CUDA
// runtime linked statically into _tf_ops.so (see setup.py, _tf_gpu_link) works on that current primary
// context, and CUstream and cudaStream_t are the same handle. The launchers' scratch (tap tables, the
// filter gradient's partial sums) is stream-ordered (cudaMallocAsync/cudaFreeAsync on that stream) from the
// device's default memory pool, outside TF's BFC allocator: small (KBs; the partial sums a few MB for
// wide layers), it fits in the memory TF leaves unreserved.
#if GOOGLE_CUDA

#include <cuda_runtime_api.h>

#include <string>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "xla/stream_executor/stream.h"

#include "../cuda/masked_conv_cuda.h"
#include "masked_conv_kernels.h"

namespace pcf_tf {

// The CUDA runtime this library was built with (CUDART_VERSION 12040 -> "12.4"), for error messages.
inline std::string CudaRuntimeVersion() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
}

struct GpuDevice {
  static void Run(tensorflow::OpKernelContext* ctx, Pass pass, const ConvProblem& p) {
    tensorflow::DeviceContext* dc = ctx->op_device_context();
    stream_executor::Stream* se_stream = dc != nullptr ? dc->stream() : nullptr;
    void* handle = se_stream != nullptr ? se_stream->platform_specific_handle().stream : nullptr;
    OP_REQUIRES(ctx, handle != nullptr,
                tensorflow::errors::Internal(ctx->op_kernel().type_string(),
                                             " (GPU): TF gave the kernel no CUDA stream"));
    const cudaStream_t stream = static_cast<cudaStream_t>(handle);
    std::string err;
    switch (pass) {
      case Pass::kForward:
        err = pcf::gpu::masked_conv2d_forward(p.taps, p.geom, p.a, p.b, p.out, stream);
        break;
      case Pass::kBackpropInput:
        err = pcf::gpu::masked_conv2d_backprop_input(p.taps, p.geom, p.a, p.b, p.out, stream);
        break;
      case Pass::kBackpropFilter:
        err = pcf::gpu::masked_conv2d_backprop_filter(p.taps, p.geom, p.a, p.b, p.out, stream);
        break;
    }
    OP_REQUIRES(ctx, err.empty(),
                tensorflow::errors::Internal(ctx->op_kernel().type_string(), " (GPU): ", err, " [",
                                             DescribeInputs(ctx, pass), "; pixelcnn_fast's TF GPU kernels use the "
                                             "CUDA ", CudaRuntimeVersion(), " runtime, linked statically]"));
  }
};

}  // namespace pcf_tf

namespace tensorflow {

using pcf_tf::GpuDevice;
using pcf_tf::MaskedConvOp;
using pcf_tf::Pass;

// float32 only, like the ops: under mixed precision ops.masked_conv2d casts float16/bfloat16 to float32
// around the op on every device. The shape vectors stay in host memory (the checks read them there).
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2D").Device(DEVICE_GPU), MaskedConvOp<Pass::kForward, GpuDevice>);
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2DBackpropInput").Device(DEVICE_GPU).HostMemory("input_shape"),
                        MaskedConvOp<Pass::kBackpropInput, GpuDevice>);
REGISTER_KERNEL_BUILDER(Name("PixelcnnFastMaskedConv2DBackpropFilter").Device(DEVICE_GPU).HostMemory("kernel_shape"),
                        MaskedConvOp<Pass::kBackpropFilter, GpuDevice>);

}  // namespace tensorflow

#endif  // GOOGLE_CUDA
