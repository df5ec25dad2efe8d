// CUDA (GPU kernels): masked conv forward, input gradient and filter gradient over live taps. The
// arithmetic of one thread is csrc/core/masked_conv_element.h (host-device, also run by the CPU tests);
// this file maps it onto threads and blocks and owns the launches.
//
// Dead taps are never visited: the tap tables (live taps, per (tap, output) input-channel ranges, their
// transpose) are copied to the device once per call and every loop runs over them. Results are
// deterministic: no atomics, every sum is added in a fixed order.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "../core/masked_conv_element.h"
#include "masked_conv_cuda.h"

namespace pcf {
namespace gpu {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops cover any size; this cap keeps the grid within limits for huge tensors.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
// Filter gradient: a block is kFilterOLanes output channels x kFilterPixelLanes pixel lanes
// (masked_conv_element.h).
constexpr int kFilterOLanes = 32;
// A filter-gradient block handles at least this many pixels, so splitting the pixels over blocks (for
// parallelism when there are few (tap, channel) tiles) never makes the partial sums dominate.
constexpr int64_t kMinPixelsPerSplit = 2048;

std::string cuda_error(const char* what, cudaError_t e) {
  return std::string(what) + " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
}

int64_t blocks_for(int64_t total) { return std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks); }

// One thread per output element (b, i, j, o), o fastest: a warp reads consecutive kernel entries of one
// tap and input channel (coalesced) and, for cout < 32, a few pixels' inputs (broadcast within a pixel).
__global__ void __launch_bounds__(kThreads) forward_kernel(LiveTapTables taps, ConvDims d,
                                                           const float* __restrict__ x,
                                                           const float* __restrict__ kernel,
                                                           float* __restrict__ y, int64_t total) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = e % d.cout, m = e / d.cout;
    const int64_t j = m % d.wo, i = (m / d.wo) % d.ho, b = m / (d.wo * d.ho);
    y[e] = forward_element(taps, d, x, kernel, b, i, j, o);
  }
}

// One thread per input-gradient element (b, qi, qj, ci), ci fastest: a warp reads one dy pixel's channels
// (broadcast) and, per thread, a contiguous run of its kernel row (cached across the o loop).
__global__ void __launch_bounds__(kThreads) backprop_input_kernel(LiveTapTables taps, ConvDims d,
                                                                  const float* __restrict__ dy,
                                                                  const float* __restrict__ kernel,
                                                                  float* __restrict__ dx, int64_t total) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ci = e % d.cin, q = e / d.cin;
    const int64_t qj = q % d.w, qi = (q / d.w) % d.h, b = q / (d.w * d.h);
    dx[e] = backprop_input_element(taps, d, dy, kernel, b, qi, qj, ci);
  }
}

// Filter gradient, pass 1. Block (o tile, pixel split) x (input-channel tile) x (live tap): thread
// (lane x = o, lane y = pixel lane) sums kFilterCiTile channels over pixels first + y, first + y + 8, ...
// of its split (dy read once per pixel for all channels of the tile, coalesced over o; x broadcast);
// the 8 pixel lanes are then added in a fixed order through shared memory into
// partial[split][t][ci][o]. Tiles outside the tap's live channel hull exit at once.
__global__ void __launch_bounds__(kFilterOLanes * kFilterPixelLanes)
    backprop_filter_partial_kernel(LiveTapTables taps, ConvDims d, const float* __restrict__ x,
                                   const float* __restrict__ dy, float* __restrict__ partial, int64_t o_tiles,
                                   int64_t pixels_per_split) {
  __shared__ float lanes[kFilterPixelLanes][kFilterCiTile][kFilterOLanes];
  const int t = blockIdx.z;
  const int64_t ci0 = int64_t(blockIdx.y) * kFilterCiTile;
  if (ci0 >= taps.ci_hi[t] || ci0 + kFilterCiTile <= taps.ci_lo[t]) return;  // whole block: no sync skipped
  const int64_t o_tile = blockIdx.x % o_tiles, split = blockIdx.x / o_tiles;
  const int64_t o = o_tile * kFilterOLanes + threadIdx.x;
  const int64_t pixels = d.n * d.ho * d.wo;
  const int64_t first = split * pixels_per_split;
  const int64_t end = first + pixels_per_split < pixels ? first + pixels_per_split : pixels;
  float acc[kFilterCiTile] = {};
  if (o < d.cout)
    backprop_filter_partial<kFilterCiTile>(taps, d, x, dy, t, ci0, o, first + threadIdx.y, end, kFilterPixelLanes,
                                           acc);
#pragma unroll
  for (int c = 0; c < kFilterCiTile; ++c) lanes[threadIdx.y][c][threadIdx.x] = acc[c];
  __syncthreads();
  // Thread (x, y) now owns channel ci0 + y of output o (kFilterPixelLanes == kFilterCiTile).
  const int64_t ci = ci0 + threadIdx.y;
  if (o < d.cout && ci < d.cin) {
    float sum = 0.0f;
#pragma unroll
    for (int l = 0; l < kFilterPixelLanes; ++l) sum += lanes[l][threadIdx.y][threadIdx.x];
    partial[((split * taps.num_taps + t) * d.cin + ci) * d.cout + o] = sum;
  }
}
static_assert(kFilterPixelLanes == kFilterCiTile, "the lane reduction maps pixel lanes onto channels");

// Filter gradient, pass 2: one thread per (live tap, ci, o); adds the splits in order and writes the live
// entries into the dense (kh, kw, cin, cout) gradient (zeroed before, so dead entries stay exactly 0).
__global__ void __launch_bounds__(kThreads) backprop_filter_reduce_kernel(LiveTapTables taps, ConvDims d,
                                                                          const float* __restrict__ partial,
                                                                          int64_t splits,
                                                                          float* __restrict__ dkernel) {
  const int64_t per_split = int64_t(taps.num_taps) * d.cin * d.cout;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < per_split;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = e % d.cout, ci = (e / d.cout) % d.cin;
    const int t = static_cast<int>(e / (d.cout * d.cin));
    const int64_t r = t * d.cout + o;
    if (ci < taps.lo[r] || ci >= taps.hi[r]) continue;
    float sum = 0.0f;
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * per_split + e];
    dkernel[((int64_t(taps.ky[t]) * d.kw + taps.kx[t]) * d.cin + ci) * d.cout + o] = sum;
  }
}

// Device memory for one call, freed in stream order (cudaFreeAsync) when the scope ends, also on errors.
class StreamBuffer {
 public:
  explicit StreamBuffer(cudaStream_t stream) : stream_(stream) {}
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  ~StreamBuffer() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  cudaError_t allocate(size_t bytes) { return cudaMallocAsync(&ptr_, std::max<size_t>(bytes, 4), stream_); }
  void* get() const { return ptr_; }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

// Copies the tap tables to the device (pageable source: the copy is staged before the call returns, so
// the host vector may go away) and returns their device view.
std::string upload_tables(const PackedTapTables& packed, StreamBuffer* buffer, cudaStream_t stream,
                          LiveTapTables* view) {
  const size_t bytes = packed.words.size() * sizeof(int32_t);
  cudaError_t e = buffer->allocate(bytes);
  if (e != cudaSuccess) return cuda_error("cudaMallocAsync (tap tables)", e);
  if (bytes > 0) {
    e = cudaMemcpyAsync(buffer->get(), packed.words.data(), bytes, cudaMemcpyHostToDevice, stream);
    if (e != cudaSuccess) return cuda_error("cudaMemcpyAsync (tap tables)", e);
  }
  *view = packed.view(static_cast<const int32_t*>(buffer->get()));
  return "";
}

std::string check_launch(const char* kernel_name) {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cuda_error(kernel_name, e);
}

}  // namespace

std::string masked_conv2d_forward(const TapSet& ts, const ConvGeometry& g, const float* x, const float* kernel,
                                  float* y, cudaStream_t stream) {
  const int64_t total = g.n * g.ho * g.wo * ts.cout;
  if (total == 0) return "";
  cudaGetLastError();  // an earlier, unrelated error must not be reported as ours
  const PackedTapTables packed = PackedTapTables::from(ts);
  StreamBuffer tables(stream);
  LiveTapTables taps;
  std::string err = upload_tables(packed, &tables, stream, &taps);
  if (!err.empty()) return err;
  forward_kernel<<<static_cast<unsigned>(blocks_for(total)), kThreads, 0, stream>>>(taps, conv_dims(ts, g), x, kernel,
                                                                                    y, total);
  return check_launch("masked conv forward kernel launch");
}

std::string masked_conv2d_backprop_input(const TapSet& ts, const ConvGeometry& g, const float* dy,
                                         const float* kernel, float* dx, cudaStream_t stream) {
  const int64_t total = g.n * g.h * g.w * ts.cin;
  if (total == 0) return "";
  cudaGetLastError();
  const PackedTapTables packed = PackedTapTables::from(ts);
  StreamBuffer tables(stream);
  LiveTapTables taps;
  std::string err = upload_tables(packed, &tables, stream, &taps);
  if (!err.empty()) return err;
  backprop_input_kernel<<<static_cast<unsigned>(blocks_for(total)), kThreads, 0, stream>>>(
      taps, conv_dims(ts, g), dy, kernel, dx, total);
  return check_launch("masked conv input-gradient kernel launch");
}

std::string masked_conv2d_backprop_filter(const TapSet& ts, const ConvGeometry& g, const float* x,
                                          const float* dy, float* dkernel, cudaStream_t stream) {
  const int64_t entries = int64_t(g.kh) * g.kw * ts.cin * ts.cout;
  if (entries == 0) return "";
  cudaGetLastError();
  cudaError_t e = cudaMemsetAsync(dkernel, 0, entries * sizeof(float), stream);
  if (e != cudaSuccess) return cuda_error("cudaMemsetAsync (filter gradient)", e);
  const int T = ts.num_taps();
  const int64_t pixels = g.n * g.ho * g.wo;
  if (T == 0 || pixels == 0) return "";
  const PackedTapTables packed = PackedTapTables::from(ts);
  StreamBuffer tables(stream);
  LiveTapTables taps;
  std::string err = upload_tables(packed, &tables, stream, &taps);
  if (!err.empty()) return err;

  // Split the pixels over blocks until there are a few blocks per multiprocessor (fixed for a given
  // shape and device, so the summation order — and the result — is reproducible).
  int device = 0, sms = 1;
  e = cudaGetDevice(&device);
  if (e != cudaSuccess) return cuda_error("cudaGetDevice", e);
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return cuda_error("cudaDeviceGetAttribute (multiprocessor count)", e);
  const int64_t o_tiles = (ts.cout + kFilterOLanes - 1) / kFilterOLanes;
  const int64_t ci_tiles = (ts.cin + kFilterCiTile - 1) / kFilterCiTile;
  const int64_t tiles = o_tiles * ci_tiles * T;
  const int64_t max_splits = std::max<int64_t>(1, (pixels + kMinPixelsPerSplit - 1) / kMinPixelsPerSplit);
  const int64_t splits = std::min(max_splits, std::max<int64_t>(1, (4 * int64_t(sms) + tiles - 1) / tiles));
  const int64_t pixels_per_split = (pixels + splits - 1) / splits;
  if (ci_tiles > 65535 || o_tiles * splits > INT32_MAX || T > 65535)
    return "masked conv filter gradient: too large for one launch (" + std::to_string(T) + " live taps, cin " +
           std::to_string(ts.cin) + ", cout " + std::to_string(ts.cout) + ")";

  const int64_t per_split = int64_t(T) * ts.cin * ts.cout;
  StreamBuffer partial(stream);
  e = partial.allocate(splits * per_split * sizeof(float));
  if (e != cudaSuccess) return cuda_error("cudaMallocAsync (filter-gradient partial sums)", e);
  const ConvDims d = conv_dims(ts, g);
  float* partial_ptr = static_cast<float*>(partial.get());
  // Entries of (tap, ci, o) that no block writes (tiles outside a tap's channel hull) are dead, and the
  // reduction skips dead entries, so the buffer needs no zeroing.
  const dim3 grid(static_cast<unsigned>(o_tiles * splits), static_cast<unsigned>(ci_tiles), static_cast<unsigned>(T));
  const dim3 block(kFilterOLanes, kFilterPixelLanes);
  backprop_filter_partial_kernel<<<grid, block, 0, stream>>>(taps, d, x, dy, partial_ptr, o_tiles, pixels_per_split);
  err = check_launch("masked conv filter-gradient kernel launch");
  if (!err.empty()) return err;
  backprop_filter_reduce_kernel<<<static_cast<unsigned>(blocks_for(per_split)), kThreads, 0, stream>>>(
      taps, d, partial_ptr, splits, dkernel);
  return check_launch("masked conv filter-gradient reduction kernel launch");
}

}  // namespace gpu
}  // namespace pcf
