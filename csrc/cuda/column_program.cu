// CUDA (GPU kernels): the cached incremental sampler — one persistent kernel per sample call. The loops and
// the arithmetic of a thread are csrc/core/flat_program.h (host-device, also run by the CPU tests through
// FlatProgram::sample_emulated); this file maps them onto blocks and threads and owns memory and launches.
//
// Why one kernel per call rather than per-step kernels captured in a CUDA graph: a 28x28 keras.io sample is
// 784 positions x ~30 dependent steps = ~23,500 steps. A graph still pays ~1-2 us per kernel node, i.e.
// >= 25 ms per call whatever the batch, above the 10 ms target for a batch of 64; inside one kernel a step
// boundary is a __syncthreads() (tens of ns), because a block owns whole images and images never wait for
// each other. (Measured choice pending: no GPU was available when this was written; see the benchmarks.)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "column_program_cuda.h"
#include "../core/checks.h"

namespace pcf {
namespace gpu {
namespace {

std::string cuda_error(const std::string& what, cudaError_t e) {
  return std::string(what) + " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
}

// flat_program.h's thread model on a block: work items strided over threadIdx.x, __syncthreads between steps.
struct BlockThreads {
  template <class F>
  __device__ void for_each(int64_t count, F f) {
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) f(k);
  }
  __device__ void sync() { __syncthreads(); }
};

__global__ void __launch_bounds__(256) sample_kernel(FlatView v, int64_t n, int images_per_block, uint64_t seed,
                                                     float temperature, int64_t image_offset, int32_t* levels,
                                                     float* margins, const int32_t* known) {
  const int64_t img0 = int64_t(blockIdx.x) * images_per_block;
  const int nb = static_cast<int>(min(int64_t(images_per_block), n - img0));
  BlockThreads th;
  flat::sample_images(v, th, img0, nb, seed, temperature, image_offset, levels, margins, known);
}

__global__ void __launch_bounds__(256) teacher_forced_kernel(FlatView v, int64_t n, int images_per_block,
                                                             const float* image, float* head_out) {
  const int64_t img0 = int64_t(blockIdx.x) * images_per_block;
  const int nb = static_cast<int>(min(int64_t(images_per_block), n - img0));
  BlockThreads th;
  flat::teacher_forced_images(v, th, img0, nb, image, head_out);
}

// Bytes of each table, placed one after another at 16-byte boundaries in one allocation.
size_t align16(size_t bytes) { return (bytes + 15) & ~size_t(15); }

}  // namespace

std::string DeviceProgram::create(FlatProgram host, std::unique_ptr<DeviceProgram>* out) {
  std::unique_ptr<DeviceProgram> p(new DeviceProgram());
  cudaError_t e = cudaGetDevice(&p->device_);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&p->sm_count_, cudaDevAttrMultiProcessorCount, p->device_);
  if (e != cudaSuccess) return cuda_error("querying the device", e);
  p->host_ = std::move(host);
  const FlatProgram& h = p->host_;
  const std::vector<FlatProgram::Table> tables = h.tables();
  std::vector<size_t> at;
  size_t total = 0;
  for (const FlatProgram::Table& t : tables) {
    at.push_back(total);
    total += align16(t.bytes);
  }
  e = cudaMalloc(&p->memory_, std::max<size_t>(total, 16));
  if (e != cudaSuccess) {
    p->memory_ = nullptr;
    return cuda_error("cudaMalloc of the program's tables (" + std::to_string(total) + " bytes)", e);
  }
  char* base = static_cast<char*>(p->memory_);
  std::vector<const void*> device_tables;
  for (size_t k = 0; k < tables.size(); ++k) {
    if (tables[k].bytes > 0) {
      e = cudaMemcpy(base + at[k], tables[k].data, tables[k].bytes, cudaMemcpyHostToDevice);
      if (e != cudaSuccess) return cuda_error("cudaMemcpy of the program's tables", e);
    }
    device_tables.push_back(base + at[k]);
  }
  p->tables_ = h.view_over(device_tables, nullptr, nullptr, 0);  // the ring is set per call
  *out = std::move(p);
  return "";
}

DeviceProgram::~DeviceProgram() {
  if (memory_ != nullptr) {
    int previous = 0;
    const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != device_ &&
                          cudaSetDevice(device_) == cudaSuccess;
    cudaFree(memory_);  // waits for work using it: cudaFree synchronises the device
    if (switched) cudaSetDevice(previous);
    cudaGetLastError();
  }
}

int DeviceProgram::auto_images_per_block(int64_t n) const {
  return static_cast<int>(std::max<int64_t>(1, (n + sm_count_ - 1) / sm_count_));
}

int DeviceProgram::auto_threads(int images_per_block) const {
  const int64_t groups = (images_per_block + kImagesPerItem - 1) / kImagesPerItem;
  int64_t widest = 32;
  for (const FlatStep& st : host_.steps) {
    const int64_t cout = host_.channels[st.out];
    widest = std::max(widest, st.kind == kFlatConv ? cout * groups : cout * images_per_block);
  }
  return static_cast<int>(std::min<int64_t>(256, (widest + 31) / 32 * 32));
}

std::string DeviceProgram::launch(bool sampling, int64_t n, uint64_t seed, float temperature, int64_t image_offset,
                                  int32_t* levels, float* margins, const int32_t* known, const float* image,
                                  float* head_out,
                                  int images_per_block, int threads, cudaStream_t stream) const {
  const char* fn = sampling ? "sample" : "teacher_forced";
  if (images_per_block == 0) images_per_block = auto_images_per_block(n);
  std::string err = host_.check_call(n, images_per_block, fn);
  if (err.empty() && sampling) err = checks::image_offset(fn, image_offset, n);
  if (!err.empty()) return err;
  if (threads == 0) threads = auto_threads(images_per_block);
  if (threads < 32 || threads > 256 || threads % 32 != 0)
    return std::string(fn) + ": threads must be a multiple of 32 in [32, 256], got " + std::to_string(threads);

  std::vector<int64_t> ring_off;
  const int64_t ring_floats = host_.ring_layout(n, &ring_off);
  const size_t off_bytes = align16(ring_off.size() * sizeof(int64_t));
  const size_t bytes = off_bytes + size_t(ring_floats) * sizeof(float);
  void* scratch = nullptr;
  cudaError_t e = cudaMallocAsync(&scratch, bytes, stream);
  if (e != cudaSuccess) return cuda_error("cudaMallocAsync of the ring caches (" + std::to_string(bytes) + " bytes)", e);
  // From pageable memory the copy is staged before cudaMemcpyAsync returns: ring_off may go out of scope.
  e = cudaMemcpyAsync(scratch, ring_off.data(), ring_off.size() * sizeof(int64_t), cudaMemcpyHostToDevice, stream);
  if (e == cudaSuccess)
    e = cudaMemsetAsync(static_cast<char*>(scratch) + off_bytes, 0, size_t(ring_floats) * sizeof(float), stream);
  if (e != cudaSuccess) {
    cudaFreeAsync(scratch, stream);
    return cuda_error("preparing the ring caches", e);
  }
  FlatView v = tables_;
  v.ring_off = static_cast<const int64_t*>(scratch);
  v.ring = reinterpret_cast<float*>(static_cast<char*>(scratch) + off_bytes);
  v.n = n;
  const int64_t blocks = (n + images_per_block - 1) / images_per_block;
  if (sampling)
    sample_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(v, n, images_per_block, seed, temperature,
                                                                       image_offset, levels, margins, known);
  else
    teacher_forced_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(v, n, images_per_block, image,
                                                                                head_out);
  e = cudaGetLastError();
  if (e != cudaSuccess) err = cuda_error(sampling ? "launching sample_kernel" : "launching teacher_forced_kernel", e);
  const cudaError_t ef = cudaFreeAsync(scratch, stream);
  if (err.empty() && ef != cudaSuccess) err = cuda_error("cudaFreeAsync of the ring caches", ef);
  return err;
}

std::string DeviceProgram::sample(int64_t n, uint64_t seed, float temperature, int64_t image_offset, int32_t* levels,
                                  float* margins, int images_per_block, int threads, cudaStream_t stream,
                                  const int32_t* known) const {
  return launch(true, n, seed, temperature, image_offset, levels, margins, known, nullptr, nullptr, images_per_block,
                threads, stream);
}

std::string DeviceProgram::teacher_forced(const float* image, int64_t n, float* head_out, int images_per_block,
                                          int threads, cudaStream_t stream) const {
  return launch(false, n, 0, 1.0f, 0, nullptr, nullptr, nullptr, image, head_out, images_per_block, threads, stream);
}

}  // namespace gpu
}  // namespace pcf
