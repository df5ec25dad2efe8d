// Core (framework-free C++17): the CPU executor's draw of one image channel: philox.h's draw_pixel_channel, with
// the logits head's weights computed by the active build's vectorised exp (Kernels::draw_logits).
//
// The GPU program and its host emulation (flat_program.h) keep philox.h's scalar draw; the two differ only where
// vexp's last ulp or the lane-wise sum's rounding moves a CDF boundary across u, which the draw's `margin` reports and rng.boundary_tolerance
// bounds (docs/SEMANTICS.md, "Randomness"; docs/KERNELS.md, "The categorical draw").
#pragma once

#include <cstdint>

#include "kernels.h"
#include "philox.h"

namespace pcf {

inline int draw_pixel_channel_cpu(const Kernels& kern, const DrawShape& head, const float* pixel, int channel,
                                  const int32_t* drawn, float temperature, uint64_t seed, uint32_t image,
                                  uint32_t position, float* margin) {
  if (head.kind != DrawHead::kLogits || head.levels > kDrawLogitsMaxLevels)
    return draw_pixel_channel(head, pixel, channel, drawn, temperature, seed, image, position, margin);
  const float u = uniform01(seed, image, position, static_cast<uint32_t>(channel));
  return kern.draw_logits(pixel + static_cast<ptrdiff_t>(channel) * head.levels, head.levels, temperature, u, margin);
}

}  // namespace pcf
