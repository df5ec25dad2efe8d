// TF adapter (GPU kernel): PixelcnnFastSample on the GPU. The same checks and program build as the CPU
// kernel (sampler_kernels.h, on host tensors: consts, n, seed, temperature and image_offset are HostMemory), then the
// program's tables go to the device and csrc/cuda/column_program.cu draws every image in one kernel on
// TF's compute stream, writing the int32 levels straight into the output tensor. No TF header reaches a
// .cu file. Compiled to nothing unless GOOGLE_CUDA is set (setup.py, TfGpuKernels; stream and context
// as in masked_conv_ops_gpu.cc).
//
// The tables are uploaded per call (like the CPU kernel builds per call): O(weights), small against the
// O(n x H x W x weights) of sampling. Freeing them (cudaFree) waits for the sample kernel, so the op
// returns with its output ready.
#if GOOGLE_CUDA

#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "xla/stream_executor/stream.h"

#include "../core/flatten.h"
#include "../cuda/column_program_cuda.h"
#include "sampler_kernels.h"

namespace tensorflow {
namespace {

class SampleGpuOp : public pcf_tf::SampleKernelBase {
 public:
  explicit SampleGpuOp(OpKernelConstruction* ctx) : SampleKernelBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    pcf_tf::SampleCall call;
    OP_REQUIRES_OK(ctx, pcf_tf::PrepareSample(ctx, spec_, &call, /*flattenable=*/true));
    DeviceContext* dc = ctx->op_device_context();
    stream_executor::Stream* se_stream = dc != nullptr ? dc->stream() : nullptr;
    void* handle = se_stream != nullptr ? se_stream->platform_specific_handle().stream : nullptr;
    OP_REQUIRES(ctx, handle != nullptr, errors::Internal("pixelcnn_fast sample (GPU): TF gave the kernel no CUDA stream"));
    std::unique_ptr<pcf::gpu::DeviceProgram> program;
    std::string err = pcf::gpu::DeviceProgram::create(pcf::flatten(call.program), &program);
    if (err.empty())
      err = program->sample(call.n, call.seed, call.temperature, call.image_offset, call.levels->flat<int32>().data(), nullptr, 0, 0,
                            static_cast<cudaStream_t>(handle));
    OP_REQUIRES(ctx, err.empty(),
                errors::Internal("pixelcnn_fast sample (GPU): ", err, " [n=", call.n, ", image (", spec_.height, ", ",
                                 spec_.width, ", ", spec_.channels, ")]"));
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("PixelcnnFastSample")
                            .Device(DEVICE_GPU)
                            .HostMemory("consts")
                            .HostMemory("n")
                            .HostMemory("seed")
                            .HostMemory("temperature")
                            .HostMemory("image_offset"),
                        SampleGpuOp);

}  // namespace tensorflow

#endif  // GOOGLE_CUDA
