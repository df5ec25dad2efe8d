// Core (framework-free C++17, CUDA-compatible): the column program as flat tables, and the cached sampler's
// per-position loop written once for the CUDA kernel and for its host emulation.
//
// The CPU executor (column_program.cc) runs a step as a gather-GEMM over many images per thread. A GPU block
// instead runs every step of every position for a few images with its threads splitting each step's outputs,
// synchronising between steps: one kernel launch samples whole images, with no host round trip per pixel
// (docs/SEMANTICS.md: cached sampler). What one thread computes for a step (a conv output channel for up to
// kImagesPerItem images over the live taps and their channel ranges, an elementwise value, a softmax group,
// a draw) and the order of the loop are written here once, as host-device code over a FlatView:
//   - csrc/cuda/column_program.cu runs `sample_images` with BlockThreads (threadIdx.x, __syncthreads);
//   - FlatProgram::sample_emulated (flat_program.cc) runs it on the host with one thread playing every
//     thread of a block in turn, so the CPU tests check the GPU's indexing, ranges and arithmetic against
//     the CPU executor on machines without a GPU (seed-identical images up to rounding-decided draws).
// The semantics are the CPU executor's (column_program.h; this header does not depend on it): raster order,
// ring caches holding the rows the consumers' taps reach, phases recomputed after each image channel, Philox
// uniforms per (image, position, channel) and the inverse-CDF draws of philox.h.
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "elementwise.h"
#include "host_device.h"
#include "philox.h"

namespace pcf {

// Images one conv work item computes: its weights are read once for all of them.
constexpr int kImagesPerItem = 4;

// Step kinds and functions as plain ints (program.h's enums, same values; flatten.cc checks them).
enum : int32_t { kFlatConv = 0, kFlatBinary, kFlatAct, kFlatConcat, kFlatGather, kFlatSoftmax, kFlatReduce };

struct FlatStep {
  int32_t kind = 0, out = 0, in0 = -1, in1 = -1, phase = 0;
  int32_t fn = 0;           // BinaryFn / ActFn / ReduceFn
  float alpha = 0.2f;       // leaky relu
  int32_t const_index = -1, const_first = 0;
  int32_t group = 1, log = 0;
  // conv: ntaps live taps; ipool[taps_off + 2t] = oy, [.. + 2t + 1] = ox (source offset of tap t), then
  // lo/hi at ranges_off: [t * cout + o] and [ntaps * cout + t * cout + o]; weights at fpool[weights_off]:
  // [t][cin][cout] (only [lo, hi) of each (t, o) is ever read).
  int32_t ntaps = 0;
  int64_t taps_off = 0, ranges_off = 0, weights_off = 0;
  // concat: nparts (is_const, buffer or const index) pairs at ipool[parts_off]; gather: channels at ipool.
  int32_t nparts = 0;
  int64_t parts_off = 0, channels_off = 0;
  // conv: elementwise steps fused into its output (bias, activation, residual add), applied in order to each
  // value before it is written to `out` (the last fused step's buffer); see flatten.h.
  int32_t nepilogue = 0;
  int64_t epilogue_off = 0;  // into FlatView::epilogues
};

// One elementwise step applied to a conv's output value x at its own pixel: act(x), fn(x, operand) or
// fn(operand, x), the operand a constant or a buffer already computed at this pixel (1 channel: broadcast).
enum : int32_t { kEpilogueAct = 0, kEpilogueConst, kEpilogueBuffer };
struct FlatEpilogue {
  int32_t kind = kEpilogueAct, fn = 0, operand = -1, operand_first = 0;
  float alpha = 0.2f;
};

struct FlatConst {
  int64_t n = 1, h = 1, w = 1, c = 1;
  int64_t off = 0;  // data at fpool[off]
};

// Pointers into one copy of a FlatProgram's tables (host or device memory: the same layout in both) plus
// the ring caches of one call: buffer b is [ring_rows[b]][n][W][channels[b]] at ring + ring_off[b].
struct FlatView {
  int32_t h = 0, w = 0, c = 0, nsteps = 0, max_phase = 0;
  int32_t head_kind = 0, head_buffer = 0, head_levels = 1;
  int32_t head_components = 0;  // a logistic mixture's K
  int32_t head_mixture_layout = 0;  // and its MixtureLayout
  float head_scale = 1.0f, head_offset = 0.0f;
  const FlatStep* steps = nullptr;
  const int32_t* ipool = nullptr;
  const float* fpool = nullptr;
  const FlatConst* consts = nullptr;
  const FlatEpilogue* epilogues = nullptr;
  const int64_t* channels = nullptr;  // per buffer
  const int32_t* ring_rows = nullptr;
  const int64_t* ring_off = nullptr;
  float* ring = nullptr;
  int64_t n = 0;  // images the ring holds

  PCF_HOST_DEVICE float* px(int32_t b, int64_t i, int64_t img, int64_t j) const {
    return ring + ring_off[b] + (((i % ring_rows[b]) * n + img) * w + j) * channels[b];
  }
  PCF_HOST_DEVICE const float* const_px(int32_t k, int64_t img, int64_t i, int64_t j) const {
    const FlatConst& t = consts[k];
    return fpool + t.off + (((t.n > 1 ? img : 0) * t.h + (t.h > 1 ? i : 0)) * t.w + (t.w > 1 ? j : 0)) * t.c;
  }
};

// The host tables (flatten() builds them, flatten.h) and the host emulation of the device loop.
struct FlatProgram {
  int32_t h = 0, w = 0, c = 0, max_phase = 0;
  int32_t head_kind = 0, head_buffer = 0, head_levels = 1;
  int32_t head_components = 0;  // a logistic mixture's K
  int32_t head_mixture_layout = 0;  // and its MixtureLayout
  float head_scale = 1.0f, head_offset = 0.0f;
  std::vector<FlatStep> steps;
  std::vector<int32_t> ipool;
  std::vector<float> fpool;
  std::vector<FlatConst> consts;
  std::vector<FlatEpilogue> epilogues;
  int32_t fused_steps = 0;    // program steps folded into conv epilogues
  int32_t dropped_steps = 0;  // program steps whose output nothing reads
  std::vector<int64_t> channels;
  std::vector<int32_t> ring_rows;

  // Each buffer's offset in a ring for n images (*ring_off) and the ring's total floats.
  int64_t ring_layout(int64_t n, std::vector<int64_t>* ring_off) const;
  int64_t max_const_batch() const;  // the largest n of a constant (1 when none is per image)
  // Checks a call's arguments; "" when fine, else a message starting with fn.
  std::string check_call(int64_t n, int images_per_block, const char* fn) const;
  // Every table a FlatView points to, in one fixed order: (address, bytes). The device copy uploads exactly
  // these and view_over() sets every view pointer from them, so a table added here reaches host and device
  // alike (the host emulation, which uses the same path, fails on a missing one).
  struct Table {
    const void* data;
    size_t bytes;
  };
  std::vector<Table> tables() const;
  // A view whose tables are at table_data[k] (tables()' order: host addresses or their device copies), over a
  // ring laid out by ring_layout(n).
  FlatView view_over(const std::vector<const void*>& table_data, float* ring, const int64_t* ring_off,
                     int64_t n) const;
  // view_over the host tables themselves.
  FlatView host_view(float* ring, const int64_t* ring_off, int64_t n) const;

  // The CUDA kernels' loops run on the host, block after block, `images_per_block` images each: tests only.
  // known (nullable): ColumnProgram::sample's known levels (image completion).
  void sample_emulated(int64_t n, uint64_t seed, float temperature, int64_t image_offset, int images_per_block,
                       int32_t* levels, float* margins, const int32_t* known = nullptr) const;
  int32_t draw_levels() const { return head_kind == static_cast<int32_t>(DrawHead::kBernoulli) ? 2 : head_levels; }
  void teacher_forced_emulated(const float* image, int64_t n, int images_per_block, float* head_out) const;
};

namespace flat {

// ---------------------------------------------------------------------------- one thread's arithmetic

// act() and binary(): elementwise.h, shared with the CPU executor.
using elementwise::act;
using elementwise::binary;

// Conv output channel o of images img0 + g * kImagesPerItem + m (m < count) at (i, j): the sum over live
// taps t in bounds and input channels [lo, hi) of tap t and o. Weights are read once per (t, ci) for all
// the item's images (in registers); a warp's threads are consecutive o: coalesced weight reads, broadcast
// input reads.
PCF_HOST_DEVICE inline void conv_item(const FlatView& v, const FlatStep& st, int64_t img0, int count, int64_t i,
                                      int64_t j, int64_t o) {
  const int64_t cin = v.channels[st.in0], cout = v.channels[st.out];
  float acc[kImagesPerItem];
  for (int m = 0; m < kImagesPerItem; ++m) acc[m] = 0.0f;
  const int32_t* off = v.ipool + st.taps_off;
  const int32_t* lo = v.ipool + st.ranges_off;
  const int32_t* hi = lo + int64_t(st.ntaps) * cout;
  const float* wt = v.fpool + st.weights_off;
  for (int32_t t = 0; t < st.ntaps; ++t) {
    const int64_t si = i + off[2 * t], sj = j + off[2 * t + 1];
    if (si < 0 || sj < 0 || sj >= v.w) continue;  // zero padding (taps never reach below or right of (i, j))
    const int32_t c0 = lo[int64_t(t) * cout + o], c1 = hi[int64_t(t) * cout + o];
    const float* src[kImagesPerItem];
    for (int m = 0; m < kImagesPerItem; ++m) src[m] = v.px(st.in0, si, img0 + (m < count ? m : 0), sj);
    const float* wrow = wt + int64_t(t) * cin * cout + o;
    for (int32_t ci = c0; ci < c1; ++ci) {
      const float wv = wrow[int64_t(ci) * cout];
      for (int m = 0; m < kImagesPerItem; ++m)
        if (m < count) acc[m] += src[m][ci] * wv;
    }
  }
  for (int m = 0; m < kImagesPerItem; ++m) {
    if (m >= count) continue;
    float x = acc[m];
    for (int32_t e = 0; e < st.nepilogue; ++e) {
      const FlatEpilogue& ep = v.epilogues[st.epilogue_off + e];
      if (ep.kind == kEpilogueAct) {
        x = act(ep.fn, x, ep.alpha);
        continue;
      }
      float u;
      if (ep.kind == kEpilogueConst) {
        u = v.const_px(ep.operand, img0 + m, i, j)[v.consts[ep.operand].c > 1 ? o : 0];
      } else {
        u = v.px(ep.operand, i, img0 + m, j)[v.channels[ep.operand] > 1 ? o : 0];
      }
      x = ep.operand_first ? binary(ep.fn, u, x) : binary(ep.fn, x, u);
    }
    v.px(st.out, i, img0 + m, j)[o] = x;
  }
}

// Channel ch of image img at (i, j) for the one-value-per-output kinds (binary, act, concat, gather).
PCF_HOST_DEVICE inline void element(const FlatView& v, const FlatStep& st, int64_t img, int64_t i, int64_t j,
                                    int64_t ch) {
  float* y = v.px(st.out, i, img, j);
  switch (st.kind) {
    case kFlatBinary: {
      const float* a = v.px(st.in0, i, img, j);
      const float av = a[v.channels[st.in0] > 1 ? ch : 0];
      float bv;
      if (st.const_index >= 0) {
        bv = v.const_px(st.const_index, img, i, j)[v.consts[st.const_index].c > 1 ? ch : 0];
      } else {
        bv = v.px(st.in1, i, img, j)[v.channels[st.in1] > 1 ? ch : 0];
      }
      y[ch] = st.const_first ? binary(st.fn, bv, av) : binary(st.fn, av, bv);
      return;
    }
    case kFlatAct:
      y[ch] = act(st.fn, v.px(st.in0, i, img, j)[ch], st.alpha);
      return;
    case kFlatConcat: {
      const int32_t* parts = v.ipool + st.parts_off;
      int64_t start = 0;
      for (int32_t p = 0; p < st.nparts; ++p) {
        const bool is_const = parts[2 * p] != 0;
        const int32_t id = parts[2 * p + 1];
        const int64_t len = is_const ? v.consts[id].c : v.channels[id];
        if (ch < start + len) {
          y[ch] = is_const ? v.const_px(id, img, i, j)[ch - start] : v.px(id, i, img, j)[ch - start];
          return;
        }
        start += len;
      }
      return;
    }
    default:  // kFlatGather
      y[ch] = v.px(st.in0, i, img, j)[v.ipool[st.channels_off + ch]];
      return;
  }
}

// Softmax group g of image img at (i, j): max, sum of exp, then the group's outputs, as the CPU does.
PCF_HOST_DEVICE inline void softmax_group(const FlatView& v, const FlatStep& st, int64_t img, int64_t i, int64_t j,
                                          int64_t g) {
  const float* a = v.px(st.in0, i, img, j) + g * st.group;
  float* y = v.px(st.out, i, img, j) + g * st.group;
  float m = a[0];
  for (int k = 1; k < st.group; ++k) m = a[k] > m ? a[k] : m;
  float sum = 0.0f;
  for (int k = 0; k < st.group; ++k) sum += expf(a[k] - m);
  for (int k = 0; k < st.group; ++k) y[k] = st.log ? a[k] - m - logf(sum) : expf(a[k] - m) / sum;
}

PCF_HOST_DEVICE inline void reduce_pixel(const FlatView& v, const FlatStep& st, int64_t img, int64_t i, int64_t j) {
  const float* a = v.px(st.in0, i, img, j);
  const int64_t cin = v.channels[st.in0];
  float r = a[0];
  for (int64_t ch = 1; ch < cin; ++ch) {
    switch (st.fn) {  // ReduceFn's order: sum, mean, max, min
      case 0:
      case 1: r += a[ch]; break;
      case 2: r = a[ch] > r ? a[ch] : r; break;
      default: r = a[ch] < r ? a[ch] : r; break;
    }
  }
  if (st.fn == 1) r /= static_cast<float>(cin);
  *v.px(st.out, i, img, j) = r;
}

// ---------------------------------------------------------------------------- a block's loops
// Threads: `for_each(count, f)` calls f(k) for k in [0, count) spread over the block's threads, `sync()`
// waits for the whole block. Every loop below is written only with these two, so a host object that runs
// f(0..count-1) in order and does nothing on sync() computes exactly what the block computes.

#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Threads>
PCF_HOST_DEVICE void run_steps(const FlatView& v, Threads& th, int64_t img0, int nb, int64_t i, int64_t j,
                               int min_phase) {
  for (int32_t k = 0; k < v.nsteps; ++k) {
    const FlatStep& st = v.steps[k];
    if (st.phase < min_phase) continue;
    const int64_t cout = v.channels[st.out];
    switch (st.kind) {
      case kFlatConv: {
        const int groups = (nb + kImagesPerItem - 1) / kImagesPerItem;
        th.for_each(cout * groups, [&](int64_t e) {
          const int64_t o = e % cout, g = e / cout;
          const int count = nb - int(g) * kImagesPerItem;
          conv_item(v, st, img0 + g * kImagesPerItem, count < kImagesPerItem ? count : kImagesPerItem, i, j, o);
        });
        break;
      }
      case kFlatSoftmax: {
        const int64_t groups = cout / st.group;
        th.for_each(nb * groups, [&](int64_t e) { softmax_group(v, st, img0 + e / groups, i, j, e % groups); });
        break;
      }
      case kFlatReduce:
        th.for_each(nb, [&](int64_t e) { reduce_pixel(v, st, img0 + e, i, j); });
        break;
      default:
        th.for_each(nb * cout, [&](int64_t e) { element(v, st, img0 + e / cout, i, j, e % cout); });
        break;
    }
    th.sync();
  }
}

// Samples images [img0, img0 + nb) (levels and optional margins: (n, H, W, C) of the whole call). known
// (nullable, (n, H, W, C)): a level >= 0 is written instead of drawn (image completion; margin +inf).
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Threads>
PCF_HOST_DEVICE void sample_images(const FlatView& v, Threads& th, int64_t img0, int nb, uint64_t seed,
                                   float temperature, int64_t image_offset, int32_t* levels, float* margins,
                                   const int32_t* known) {
  const int32_t C = v.c;
  const DrawShape draw{static_cast<DrawHead>(v.head_kind), v.head_levels, v.head_components, C,
                       static_cast<MixtureLayout>(v.head_mixture_layout)};
  for (int64_t i = 0; i < v.h; ++i) {
    for (int64_t j = 0; j < v.w; ++j) {
      const uint32_t position = static_cast<uint32_t>(i * v.w + j);
      // The image at this position is unknown until drawn: zero it (the slot held an older row).
      th.for_each(int64_t(nb) * C, [&](int64_t e) { v.px(0, i, img0 + e / C, j)[e % C] = 0.0f; });
      th.sync();
      for (int32_t c = 0; c < C; ++c) {
        run_steps(v, th, img0, nb, i, j, c);  // pass c: everything that may depend on channels drawn so far
        th.for_each(nb, [&](int64_t e) {
          const int64_t img = img0 + e;
          const int64_t at = ((img * v.h + i) * v.w + j) * C + c;
          float margin = INFINITY;  // a known level: no draw
          // An RGB mixture reads the channels drawn before at this pixel from `levels` (written before the last
          // sync by this block).
          const int level = known != nullptr && known[at] >= 0
                                ? known[at]
                                : draw_pixel_channel(draw, v.px(v.head_buffer, i, img, j), c, levels + (at - c),
                                                     temperature, seed, static_cast<uint32_t>(image_offset + img),
                                                     position, &margin);
          levels[at] = level;
          if (margins != nullptr) margins[at] = margin;
          v.px(0, i, img, j)[c] = static_cast<float>(level) * v.head_scale + v.head_offset;
        });
        th.sync();
      }
      if (v.max_phase >= C) run_steps(v, th, img0, nb, i, j, C);  // steps reading the last channel here
    }
  }
}

// Head values at every position with `image` (n, H, W, C) fed in, for images [img0, img0 + nb).
#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <class Threads>
PCF_HOST_DEVICE void teacher_forced_images(const FlatView& v, Threads& th, int64_t img0, int nb, const float* image,
                                           float* head_out) {
  const int32_t C = v.c;
  const int64_t hc = v.channels[v.head_buffer];
  for (int64_t i = 0; i < v.h; ++i) {
    for (int64_t j = 0; j < v.w; ++j) {
      th.for_each(int64_t(nb) * C, [&](int64_t e) {
        const int64_t img = img0 + e / C;
        v.px(0, i, img, j)[e % C] = image[((img * v.h + i) * v.w + j) * C + e % C];
      });
      th.sync();
      run_steps(v, th, img0, nb, i, j, 0);
      th.for_each(int64_t(nb) * hc, [&](int64_t e) {
        const int64_t img = img0 + e / hc;
        head_out[((img * v.h + i) * v.w + j) * hc + e % hc] = v.px(v.head_buffer, i, img, j)[e % hc];
      });
      th.sync();
    }
  }
}

}  // namespace flat
}  // namespace pcf
