// Core (framework-free C++17, CUDA-compatible): the index math of a stride-1 dilated convolution, written
// once for the CPU core and the CUDA kernels (csrc/cuda) so that the CPU tests exercise what the GPU runs.
//
// Convention (docs/SEMANTICS.md, TF's): output position p reads, through tap k of a kernel of size K with dilation
// d, the input position p + k * d - pad_before; 'same' keeps the size and pads (extent - 1) / 2 before,
// which for odd kernels puts the centre tap at offset 0; 'valid' pads nothing.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace pcf {

// Rows (or columns) the dilated kernel spans.
PCF_HOST_DEVICE inline int64_t dilated_extent(int k, int d) { return int64_t(k - 1) * d + 1; }

// Padding before the first row/column: TF splits the total (extent - 1) with the smaller half first.
PCF_HOST_DEVICE inline int64_t pad_before(int k, int d, bool same) { return same ? (dilated_extent(k, d) - 1) / 2 : 0; }

// Output size along one axis; below 1 for a 'valid' input smaller than the extent (the caller reports it).
PCF_HOST_DEVICE inline int64_t conv_output_size(int64_t in, int k, int d, bool same) {
  return same ? in : in - dilated_extent(k, d) + 1;
}

// Offset from an output position to the input position it reads through tap index k.
PCF_HOST_DEVICE inline int64_t tap_offset(int k, int d, int64_t pad) { return int64_t(k) * d - pad; }

// Whether a source coordinate lies inside [0, size): outside it the (zero) padding is read, i.e. nothing.
PCF_HOST_DEVICE inline bool in_range(int64_t c, int64_t size) { return c >= 0 && c < size; }

}  // namespace pcf
