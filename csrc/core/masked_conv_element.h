// Core (framework-free C++17, CUDA-compatible): the masked conv as per-element sums over live taps — the
// arithmetic of the CUDA kernels (csrc/cuda/masked_conv.cu), written once for host and device.
//
// The CPU's fast path is the blocked im2col + GEMM of masked_conv.cc; these functions are what one GPU
// thread computes. masked_conv_elementwise.cc runs them on the host over every element so that the CPU
// tests check the GPU's arithmetic (tap offsets, bounds, channel ranges, layouts) against the float64
// oracle on a machine without a GPU. Only the live taps of a TapSet and their channel ranges are visited;
// nothing is multiplied by a mask.
#pragma once

#include <climits>
#include <cstdint>
#include <vector>

#include "conv_index.h"
#include "host_device.h"
#include "masked_conv.h"
#include "tapset.h"

namespace pcf {

// Sizes of one call, as plain values a kernel can take by value.
struct ConvDims {
  int64_t n, h, w, ho, wo, cin, cout;
  int kh, kw, dh, dw;
  int64_t pad_top, pad_left;
};

inline ConvDims conv_dims(const TapSet& ts, const ConvGeometry& g) {
  return ConvDims{g.n, g.h, g.w, g.ho, g.wo, ts.cin, ts.cout, g.kh, g.kw, g.dh, g.dw, g.pad_top, g.pad_left};
}

// A TapSet's tables as pointers into one int32 block (host or device memory: the same layout in both).
struct LiveTapTables {
  int num_taps;
  const int32_t* ky;       // [t]
  const int32_t* kx;       // [t]
  const int32_t* lo;       // [t * cout + o]: input channels of output o through tap t, [lo, hi)
  const int32_t* hi;
  const int32_t* rlo;      // [t * cin + ci]: output channels reading ci through t (TapSet::transposed_ranges)
  const int32_t* rhi;
  const int32_t* ci_lo;    // [t]: hull over outputs of [lo, hi): the input channels tap t reads at all
  const int32_t* ci_hi;
};

// The packed block behind LiveTapTables and the view of it at `base` (a host copy, or a device copy of
// `words`). Built once per call on the host.
struct PackedTapTables {
  int num_taps = 0;
  int64_t cin = 0, cout = 0;
  std::vector<int32_t> words;

  static PackedTapTables from(const TapSet& ts) {
    PackedTapTables p;
    const int T = ts.num_taps();
    p.num_taps = T;
    p.cin = ts.cin;
    p.cout = ts.cout;
    std::vector<int32_t> rlo, rhi;
    ts.transposed_ranges(&rlo, &rhi);
    std::vector<int32_t> ci_lo(T, 0), ci_hi(T, 0);
    for (int t = 0; t < T; ++t) {
      int32_t l = INT32_MAX, h = 0;
      for (int64_t o = 0; o < ts.cout; ++o) {
        const int64_t i = t * ts.cout + o;
        if (ts.hi[i] > ts.lo[i]) {
          l = ts.lo[i] < l ? ts.lo[i] : l;
          h = ts.hi[i] > h ? ts.hi[i] : h;
        }
      }
      ci_lo[t] = h > 0 ? l : 0;
      ci_hi[t] = h;
    }
    auto append = [&p](const std::vector<int32_t>& v) { p.words.insert(p.words.end(), v.begin(), v.end()); };
    append(ts.ky);
    append(ts.kx);
    append(ts.lo);
    append(ts.hi);
    append(rlo);
    append(rhi);
    append(ci_lo);
    append(ci_hi);
    return p;
  }

  LiveTapTables view(const int32_t* base) const {
    LiveTapTables v;
    const int64_t T = num_taps;
    v.num_taps = num_taps;
    v.ky = base;
    v.kx = v.ky + T;
    v.lo = v.kx + T;
    v.hi = v.lo + T * cout;
    v.rlo = v.hi + T * cout;
    v.rhi = v.rlo + T * cin;
    v.ci_lo = v.rhi + T * cin;
    v.ci_hi = v.ci_lo + T;
    return v;
  }
};

// y[b, i, j, o]: the sum over live taps whose source lies inside the image and over the live input
// channels of (tap, o). Consecutive o (consecutive threads on the GPU) read consecutive kernel entries.
PCF_HOST_DEVICE inline float forward_element(const LiveTapTables& taps, const ConvDims& d, const float* x,
                                             const float* kernel, int64_t b, int64_t i, int64_t j, int64_t o) {
  float acc = 0.0f;
  for (int t = 0; t < taps.num_taps; ++t) {
    const int64_t si = i + tap_offset(taps.ky[t], d.dh, d.pad_top);
    const int64_t sj = j + tap_offset(taps.kx[t], d.dw, d.pad_left);
    if (!in_range(si, d.h) || !in_range(sj, d.w)) continue;
    const float* xs = x + ((b * d.h + si) * d.w + sj) * d.cin;
    const float* ws = kernel + (int64_t(taps.ky[t]) * d.kw + taps.kx[t]) * d.cin * d.cout + o;
    const int32_t lo = taps.lo[t * d.cout + o], hi = taps.hi[t * d.cout + o];
    for (int32_t ci = lo; ci < hi; ++ci) acc += xs[ci] * ws[ci * d.cout];
  }
  return acc;
}

// dx[b, qi, qj, ci] = sum over live taps t and the outputs o reading ci through t of dy at the output
// position that read (qi, qj) through t, times the kernel entry: the forward pass transposed.
PCF_HOST_DEVICE inline float backprop_input_element(const LiveTapTables& taps, const ConvDims& d, const float* dy,
                                                    const float* kernel, int64_t b, int64_t qi, int64_t qj,
                                                    int64_t ci) {
  float acc = 0.0f;
  for (int t = 0; t < taps.num_taps; ++t) {
    const int64_t oi = qi - tap_offset(taps.ky[t], d.dh, d.pad_top);
    const int64_t oj = qj - tap_offset(taps.kx[t], d.dw, d.pad_left);
    if (!in_range(oi, d.ho) || !in_range(oj, d.wo)) continue;
    const float* dys = dy + ((b * d.ho + oi) * d.wo + oj) * d.cout;
    const float* ws = kernel + ((int64_t(taps.ky[t]) * d.kw + taps.kx[t]) * d.cin + ci) * d.cout;
    const int32_t lo = taps.rlo[t * d.cin + ci], hi = taps.rhi[t * d.cin + ci];
    for (int32_t o = lo; o < hi; ++o) acc += dys[o] * ws[o];
  }
  return acc;
}

// Partial sums of the filter gradient for tap t, input channels ci0 .. ci0 + CI_TILE - 1 (those < cin)
// and output channel o, over the output pixels m = first, first + step, ... < end (m flattens b, i, j):
// acc[c] += x[source of m through t, ci0 + c] * dy[m, o]. The GPU gives each of a block's pixel lanes its
// own `first` and step kFilterPixelLanes, splits the pixels over blocks, and adds the partials in a fixed
// order; the host driver uses the same lanes over one range.
template <int CI_TILE>
PCF_HOST_DEVICE inline void backprop_filter_partial(const LiveTapTables& taps, const ConvDims& d, const float* x,
                                                    const float* dy, int t, int64_t ci0, int64_t o, int64_t first,
                                                    int64_t end, int64_t step, float* acc) {
  if (first >= end) return;
  const int64_t oy = tap_offset(taps.ky[t], d.dh, d.pad_top), ox = tap_offset(taps.kx[t], d.dw, d.pad_left);
  const int64_t nci = d.cin - ci0 < CI_TILE ? d.cin - ci0 : CI_TILE;
  // (b, i, j) of m, advanced by `step` without a 64-bit division per pixel.
  const int64_t per_image = d.ho * d.wo;
  int64_t b = first / per_image, i = (first % per_image) / d.wo, j = first % d.wo;
  for (int64_t m = first; m < end; m += step) {
    const int64_t si = i + oy, sj = j + ox;
    if (in_range(si, d.h) && in_range(sj, d.w)) {
      const float g = dy[m * d.cout + o];
      const float* xs = x + ((b * d.h + si) * d.w + sj) * d.cin + ci0;
      // Constant indices only (a fully unrolled loop with a guard): acc stays in GPU registers.
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int c = 0; c < CI_TILE; ++c)
        if (c < nci) acc[c] += xs[c] * g;
    }
    j += step;
    while (j >= d.wo) {
      j -= d.wo;
      if (++i == d.ho) {
        i = 0;
        ++b;
      }
    }
  }
}

// Input channels per filter-gradient work item (registers per GPU thread): x is read once per pixel for
// this many channels, dy once for all of them.
constexpr int kFilterCiTile = 8;
// Pixel lanes per filter-gradient block: lane l sums pixels l, l + kFilterPixelLanes, ...
constexpr int kFilterPixelLanes = 8;

// The per-element algorithm run on the host over every element, for the tests (see the top of this file);
// the signatures are those of masked_conv.h.
void masked_conv2d_forward_elementwise(const TapSet& taps, const ConvGeometry& g, const float* x,
                                       const float* kernel, float* y, const Parallel& par);
void masked_conv2d_backprop_input_elementwise(const TapSet& taps, const ConvGeometry& g, const float* dy,
                                              const float* kernel, float* dx, const Parallel& par);
void masked_conv2d_backprop_filter_elementwise(const TapSet& taps, const ConvGeometry& g, const float* x,
                                               const float* dy, float* dkernel, const Parallel& par);

}  // namespace pcf
