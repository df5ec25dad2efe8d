// Core (framework-free C++17, header-only, CUDA-compatible): the sampler's randomness — one Philox4x32-10
// uniform per (image, position, channel) and the inverse-CDF draw of a level from the model's output head.
//
// The contract is notes/sampler_contract.md (DESIGN.md, "Randomness"); pixelcnn_fast/rng.py (numba) implements it
// once more, statement for statement, for the Python naive loops and references.
//   key = (seed mod 2^32, seed div 2^32); counter = (image, position = i * W + j, channel, 0);
//   u = (first output word >> 8) * 2^-24, a float32 in [0, 1).
//   bernoulli: level 1 iff u < 1 / (1 + exp(-logit / T)).
//   categorical: e_k = exp(z_k / T - max_j z_j / T) (logits) or p_k ** (1/T) (probabilities; p_k at T == 1),
//   s = sum_k e_k, c_k = c_{k-1} + e_k / s, all float32 and sequential in k; level = smallest k with u < c_k,
//   else (rounding left c_{N-1} below u) the largest k with e_k > 0.
//
// Bit-exactness. The uniform is integer arithmetic, an exact int -> float conversion (24 bits) and an exact
// scaling by 2^-24: every backend gets the same bits. A draw is float32 arithmetic in a fixed order with no
// a * b + c, so FMA contraction (-ffp-contract=fast, nvcc's default) cannot change it, and two library functions,
// expf and powf, which are not correctly rounded: glibc, CUDA and numpy's SIMD loops may differ in the last ulp.
// The C++ core and numba call the same libm in one process and so draw identical levels (tests/test_rng.py
// checks it); against another library a level can differ only where u lies within rounding of a cdf boundary.
// Every draw function therefore optionally reports that distance, `margin` (|u - p| for bernoulli, the distance
// from u to the nearest computed c_k around the drawn level), so a comparison between backends can tell a
// rounding-decided draw from a wrong one instead of failing at random (rng.boundary_tolerance gives the bound).
//
// Beyond the contract, where its formulas give 0/0 or inf - inf (they agree with it wherever they are defined):
//   - logits: a level whose z_k / T equals the maximum gets e_k = 1 (exp(0), the contract's value) even when the
//     maximum is +-inf (z / T overflowed at a tiny T; all logits -inf): the maximal levels share the mass.
//   - probabilities: if every p_k ** (1/T) underflows to 0 (tiny T), e_k = (p_k / max p) ** (1/T) (the same
//     distribution, max level weight 1); all p_k == 0 makes every level equally likely.
//   - weights that are no distribution (NaN inputs, s infinite): level 0, margin 0 (decided by no u).
// The temperature must be positive and finite (the adapters check it); probabilities must be >= 0.
#pragma once

#include <math.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>

#include "host_device.h"

namespace pcf {

// A Philox counter or output block: four 32-bit words.
struct PhiloxBlock {
  uint32_t w[4];
};

// Philox4x32-10 (Salmon et al. 2011, Random123's philox4x32_R with R = 10): ten rounds, the key bumped by the
// Weyl constants before every round but the first.
PCF_HOST_DEVICE inline PhiloxBlock philox4x32_10(PhiloxBlock ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kW0;
      key1 += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr.w[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr.w[2];
    ctr = PhiloxBlock{{static_cast<uint32_t>(p1 >> 32) ^ ctr.w[1] ^ key0, static_cast<uint32_t>(p1),
                       static_cast<uint32_t>(p0 >> 32) ^ ctr.w[3] ^ key1, static_cast<uint32_t>(p0)}};
  }
  return ctr;
}

// The uniform of image channel `channel` at raster position `position` of image `image` (its index among all
// images of the sampling call, so splitting a batch never changes an image).
PCF_HOST_DEVICE inline float uniform01(uint64_t seed, uint32_t image, uint32_t position, uint32_t channel) {
  const PhiloxBlock out = philox4x32_10(PhiloxBlock{{image, position, channel, 0u}}, static_cast<uint32_t>(seed),
                                        static_cast<uint32_t>(seed >> 32));
  return static_cast<float>(out.w[0] >> 8) * 5.9604644775390625e-8f;  // 2^-24: exact
}

// Bernoulli head: level 1 iff u < sigmoid(logit / T). A NaN logit draws 0 with margin 0.
PCF_HOST_DEVICE inline int draw_bernoulli(float logit, float temperature, float u, float* margin = nullptr) {
  const float p = 1.0f / (1.0f + expf(-logit / temperature));
  if (margin != nullptr) *margin = p == p ? fabsf(u - p) : 0.0f;
  return u < p ? 1 : 0;
}

namespace philox_detail {

// e_k of the logits head; m = max_k z_k / T.
struct LogitWeight {
  const float* z;
  ptrdiff_t stride;
  float temperature;
  float m;
  PCF_HOST_DEVICE float operator()(int k) const {
    const float zk = z[k * stride] / temperature;
    return zk == m ? 1.0f : expf(zk - m);
  }
};

// e_k of the probabilities head: p_k, or p_k ** inv_t where `power` (T != 1); divided by pmax first where
// `normalised` (the fallback for underflow, see the file comment).
struct ProbWeight {
  const float* p;
  ptrdiff_t stride;
  float inv_t;
  bool power;
  bool normalised;
  float pmax;
  PCF_HOST_DEVICE float operator()(int k) const {
    const float pk = p[k * stride];
    const float x = normalised ? (pk == pmax ? 1.0f : pk / pmax) : pk;
    return power ? powf(x, inv_t) : x;
  }
};

template <class Weight>
PCF_HOST_DEVICE inline float weight_sum(const Weight& weight, int n) {
  float s = 0.0f;
  for (int k = 0; k < n; ++k) s += weight(k);
  return s;
}

// The level of u under weights e_k = weight(k) with sum s. The weights are recomputed rather than stored so that
// any N fits without a buffer (CUDA threads have none to spare); both passes compute the same bits.
template <class Weight>
PCF_HOST_DEVICE inline int inverse_cdf(const Weight& weight, int n, float s, float u, float* margin) {
  if (!(s > 0.0f && s <= FLT_MAX)) {
    if (margin != nullptr) *margin = 0.0f;
    return 0;
  }
  float c = 0.0f;
  int last_positive = 0;
  for (int k = 0; k < n; ++k) {
    const float e = weight(k);
    const float below = c;
    c += e / s;
    if (e > 0.0f) last_positive = k;
    if (u < c) {
      if (margin != nullptr) {
        // c is non-decreasing, so the nearest boundaries are c_k above u and c_{k-1} below it; a lower
        // boundary of 0 (only massless levels before) decides nothing, u >= 0 always.
        float d = c - u;
        if (below > 0.0f && u - below < d) d = u - below;
        *margin = d;
      }
      return k;
    }
  }
  // Rounding left c_{N-1} <= u < 1: the draw is decided by the fallback, within rounding of c_{N-1}.
  if (margin != nullptr) *margin = u - c;
  return last_positive;
}

}  // namespace philox_detail

// Categorical head over n levels from logits z[0], z[stride], ..., z[(n-1) * stride]; n >= 1.
PCF_HOST_DEVICE inline int draw_categorical_logits(const float* z, int n, int stride, float temperature, float u,
                                                   float* margin = nullptr) {
  float m = -HUGE_VALF;
  for (int k = 0; k < n; ++k) {
    const float zk = z[static_cast<ptrdiff_t>(k) * stride] / temperature;
    if (zk > m) m = zk;
  }
  const philox_detail::LogitWeight weight{z, stride, temperature, m};
  return philox_detail::inverse_cdf(weight, n, philox_detail::weight_sum(weight, n), u, margin);
}

// Categorical head over n levels from probabilities p[0], p[stride], ... (softmax applied by the model); n >= 1.
PCF_HOST_DEVICE inline int draw_categorical_probs(const float* p, int n, int stride, float temperature, float u,
                                                  float* margin = nullptr) {
  philox_detail::ProbWeight weight{p, stride, 1.0f / temperature, temperature != 1.0f, false, 0.0f};
  float s = philox_detail::weight_sum(weight, n);
  if (!(s > 0.0f)) {
    for (int k = 0; k < n; ++k) {
      const float pk = p[static_cast<ptrdiff_t>(k) * stride];
      if (pk > weight.pmax) weight.pmax = pk;
    }
    weight.normalised = true;
    s = philox_detail::weight_sum(weight, n);
  }
  return philox_detail::inverse_cdf(weight, n, s, u, margin);
}

// The output heads a draw can come from (DESIGN.md, "Output heads").
enum class DrawHead { kBernoulli, kLogits, kProbs };

// One draw from the head's n values at values[0], values[stride], ... (bernoulli: n == 1, the logit).
PCF_HOST_DEVICE inline int draw_level(DrawHead head, const float* values, int n, int stride, float temperature, float u,
                                      float* margin = nullptr) {
  switch (head) {
    case DrawHead::kBernoulli:
      return draw_bernoulli(values[0], temperature, u, margin);
    case DrawHead::kLogits:
      return draw_categorical_logits(values, n, stride, temperature, u, margin);
    default:
      return draw_categorical_probs(values, n, stride, temperature, u, margin);
  }
}

}  // namespace pcf
