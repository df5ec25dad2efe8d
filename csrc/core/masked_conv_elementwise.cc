// Core (framework-free C++17): the CUDA kernels' per-element arithmetic (masked_conv_element.h) run on the
// host over every element. Not a fast path: the CPU tests compare it with the float64 oracle so that the
// GPU's index math and channel ranges are checked on machines without a GPU.
#include <algorithm>

#include "masked_conv_element.h"

namespace pcf {

void masked_conv2d_forward_elementwise(const TapSet& ts, const ConvGeometry& g, const float* x, const float* kernel,
                                       float* y, const Parallel& par) {
  const PackedTapTables packed = PackedTapTables::from(ts);
  const LiveTapTables taps = packed.view(packed.words.data());
  const ConvDims d = conv_dims(ts, g);
  par.for_each(d.n * d.ho, d.wo * ts.live_macs_per_pixel() + 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < d.wo; ++j)
        for (int64_t o = 0; o < d.cout; ++o)
          y[(r * d.wo + j) * d.cout + o] = forward_element(taps, d, x, kernel, r / d.ho, r % d.ho, j, o);
  });
}

void masked_conv2d_backprop_input_elementwise(const TapSet& ts, const ConvGeometry& g, const float* dy,
                                              const float* kernel, float* dx, const Parallel& par) {
  const PackedTapTables packed = PackedTapTables::from(ts);
  const LiveTapTables taps = packed.view(packed.words.data());
  const ConvDims d = conv_dims(ts, g);
  par.for_each(d.n * d.h, d.w * ts.live_macs_per_pixel() + 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < d.w; ++j)
        for (int64_t ci = 0; ci < d.cin; ++ci)
          dx[(r * d.w + j) * d.cin + ci] = backprop_input_element(taps, d, dy, kernel, r / d.h, r % d.h, j, ci);
  });
}

void masked_conv2d_backprop_filter_elementwise(const TapSet& ts, const ConvGeometry& g, const float* x,
                                               const float* dy, float* dkernel, const Parallel& par) {
  const PackedTapTables packed = PackedTapTables::from(ts);
  const LiveTapTables taps = packed.view(packed.words.data());
  const ConvDims d = conv_dims(ts, g);
  std::fill(dkernel, dkernel + int64_t(d.kh) * d.kw * d.cin * d.cout, 0.0f);
  const int64_t pixels = d.n * d.ho * d.wo;
  const int64_t tiles = (d.cin + kFilterCiTile - 1) / kFilterCiTile;
  // One work item per (live tap, input-channel tile), as one GPU block row; dead (ci, o) pairs are
  // computed in a tile but never written, so they stay exactly 0.
  par.for_each(taps.num_taps * tiles, pixels * kFilterCiTile * d.cout + 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int t = static_cast<int>(w / tiles);
      const int64_t ci0 = (w % tiles) * kFilterCiTile;
      if (ci0 >= taps.ci_hi[t] || ci0 + kFilterCiTile <= taps.ci_lo[t]) continue;
      float* out = dkernel + (int64_t(taps.ky[t]) * d.kw + taps.kx[t]) * d.cin * d.cout;
      for (int64_t o = 0; o < d.cout; ++o) {
        // The GPU block's pixel lanes, added in lane order as its shared-memory reduction does.
        float lanes[kFilterPixelLanes][kFilterCiTile] = {};
        for (int l = 0; l < kFilterPixelLanes; ++l)
          backprop_filter_partial<kFilterCiTile>(taps, d, x, dy, t, ci0, o, l, pixels, kFilterPixelLanes, lanes[l]);
        for (int64_t c = 0; c < kFilterCiTile && ci0 + c < d.cin; ++c) {
          float sum = 0.0f;
          for (int l = 0; l < kFilterPixelLanes; ++l) sum += lanes[l][c];
          if (ts.live(t, ci0 + c, o)) out[(ci0 + c) * d.cout + o] = sum;
        }
      }
    }
  });
}

}  // namespace pcf
