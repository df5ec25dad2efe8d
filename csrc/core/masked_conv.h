// Core (framework-free C++17): masked 2-D convolution — forward, gradient w.r.t. input, gradient
// w.r.t. filter — over the live taps of a TapSet only. NHWC float32, stride 1, 'same' or 'valid'.
//
// All three run on one mechanism: gather an L2-sized block of output pixels' live inputs (im2col over
// live taps, never dead ones) and multiply it by the kernel packed per output-channel segment with the
// microkernels of kernels.h. A segment is a run of output channels that read the same channel ranges
// per tap (colour groups give three at the centre tap), so no masked-out product is ever formed.
#pragma once

#include <cstdint>
#include <string>

#include "parallel.h"
#include "tapset.h"

namespace pcf {

struct ConvGeometry {
  int64_t n = 0, h = 0, w = 0;    // input batch and spatial size
  int64_t ho = 0, wo = 0;         // output spatial size
  int kh = 0, kw = 0, dh = 1, dw = 1;
  int64_t pad_top = 0, pad_left = 0;
};

// Fills *g; returns "" or an error naming the argument ('valid' padding with an input smaller than the
// dilated kernel). padding is "same" or "valid" (any case), already checked by check_mask_args.
std::string make_geometry(int64_t n, int64_t h, int64_t w, int kh, int kw, int dh, int dw,
                          const std::string& padding, ConvGeometry* g);

// y (n, ho, wo, cout) = masked conv of x (n, h, w, cin) with kernel (kh, kw, cin, cout). y is fully
// overwritten. Only kernel entries live in `taps` are read.
void masked_conv2d_forward(const TapSet& taps, const ConvGeometry& g, const float* x, const float* kernel,
                           float* y, const Parallel& par);

// dx (n, h, w, cin) from dy (n, ho, wo, cout). dx is fully overwritten.
void masked_conv2d_backprop_input(const TapSet& taps, const ConvGeometry& g, const float* dy,
                                  const float* kernel, float* dx, const Parallel& par);

// dkernel (kh, kw, cin, cout) from x and dy; entries not live in `taps` are exactly 0.
void masked_conv2d_backprop_filter(const TapSet& taps, const ConvGeometry& g, const float* x, const float* dy,
                                   float* dkernel, const Parallel& par);

}  // namespace pcf
