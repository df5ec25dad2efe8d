// Core (framework-free C++17): tap sets — which kernel taps and channels a masked conv reads.
//
// A tap set lists the live taps (ky, kx) of a kh x kw kernel in raster order and, for every live tap t
// and output channel o, the half-open range [lo, hi) of input channels that feed o through t. Mask A/B
// with colour groups (docs/SEMANTICS.md) give exact ranges; a tap set read from an arbitrary kernel's non-zero
// structure gives the hull of the non-zeros, which is exact too because every entry the hull adds is a
// zero of that kernel. Dead taps never appear, so they are never read nor multiplied.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pcf {

enum class MaskType { A, B };

struct TapSet {
  int kh = 0, kw = 0;
  int64_t cin = 0, cout = 0;
  std::vector<int> ky, kx;        // live taps, raster order
  std::vector<int32_t> lo, hi;    // [t * cout + o]: live input channels of output o through tap t

  int num_taps() const { return static_cast<int>(ky.size()); }
  bool live(int t, int64_t ci, int64_t o) const {
    const int64_t i = t * cout + o;
    return lo[i] <= ci && ci < hi[i];
  }
  // Appends tap (y, x) with its per-output ranges when any output reads through it.
  void add_tap(int y, int x, const std::vector<int32_t>& tap_lo, const std::vector<int32_t>& tap_hi);
  // The transposed ranges, for the input gradient: for tap t and input channel ci, [(*rlo)[t * cin + ci],
  // (*rhi)[t * cin + ci]) is the hull of the output channels that read ci through t ([0, 0) when none).
  // Exact for masks (a suffix of the outputs); for a kernel's non-zeros every entry the hull adds is a
  // zero of that kernel, so multiplying by it changes nothing.
  void transposed_ranges(std::vector<int32_t>* rlo, std::vector<int32_t>* rhi) const;
  // Multiply-adds per output pixel over live (tap, cin, cout) triples.
  int64_t live_macs_per_pixel() const;
  // The same count for the dense kernel (kh * kw * cin * cout).
  int64_t dense_macs_per_pixel() const { return int64_t(kh) * kw * cin * cout; }

  // Mask A/B, colour groups 1 or 3 (contiguous channel blocks). Arguments must have passed
  // check_mask_args (odd kh/kw, channels divisible by color_groups).
  static TapSet from_mask(int kh, int kw, int64_t cin, int64_t cout, MaskType mask, int color_groups);
  // Live taps and channel ranges from the non-zeros of a dense (kh, kw, cin, cout) kernel.
  static TapSet from_kernel(const float* kernel, int kh, int kw, int64_t cin, int64_t cout);
};

// Shared validation of the semantic arguments; returns "" when fine, else a message naming the argument,
// what was expected and what came. Adapters (pybind, TF op) add their own dtype/rank/layout checks.
std::string check_mask_args(int kh, int kw, int64_t cin, int64_t kernel_cin, int64_t cout,
                            const std::string& mask_type, int color_groups, int dil_h, int dil_w, const std::string& padding);
// Parses "A"/"B" (any case); call after check_mask_args.
MaskType parse_mask_type(const std::string& mask_type);

}  // namespace pcf
