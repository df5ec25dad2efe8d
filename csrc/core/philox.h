// Core (framework-free C++17, header-only, CUDA-compatible): the sampler's randomness — one Philox4x32-10
// uniform per (image, position, channel) and the inverse-CDF draw of a level from the model's output head.
//
// The contract is docs/SEMANTICS.md, "Randomness"; pixelcnn_fast/rng.py (numba) implements it
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
// checks it); against another library a level can differ only where u lies within rounding of a cdf boundary. The
// CPU executor's logits draw (Kernels::draw_logits, through draw_cpu.h) is such another library: it runs this
// file's walk over weights from a vectorised exp (within 1 ulp of expf), summed in vector lanes.
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

// Logistic-mixture head (PixelCNN++, TFP's PixelCNN; docs/SEMANTICS.md, "Logistic-mixture heads").
// A pixel's head holds K mixture logits and, per image channel, K means and K log-scales; RGB adds per channel
// K coefficients. Two layouts, PixelCNN++'s (openai/pixel-cnn):
//   grey (channels == 1), 3K values: [logits(K), means(K), log_scales(K)];
//   RGB (channels == 3), 10K values: [logits(K), then per channel c: means(K), log_scales(K), coeffs(K)].
// One component j is chosen per pixel: the categorical draw over logits / T with the pixel's component uniform
// (word 1 of the channel-0 Philox block, so it is independent of every channel's own uniform, word 0). Channel
// c's value is then logistic with mean mu_c and scale s = exp(max(log_scale_c, -7)) * T, where RGB couples the
// means to the channels already drawn at the pixel, as openai's sampler does but with the *discretised* values
// x = 2 * level / (L - 1) - 1 that the model's likelihood conditions on:
//   mu_G += tanh(coeff_R) * x_R;   mu_B += tanh(coeff_G) * x_R + tanh(coeff_B) * x_G   (coeff_c: block c's).
// The level is the inverse CDF of the discretised logistic over L levels (bin k = [b_{k-1}, b_k), b_k =
// (2k + 1) / (L - 1) - 1, the outer bins open), computed as t = mu + s * (log(u) - log1p(-u)) and
// level = clamp(floor((t + 1) * (L - 1) / 2 - 0.5) + 1, 0, L - 1), float32. Temperature: T = 1 is the model's
// distribution; T -> 0 picks the most likely component and the bin of its mean. A NaN value anywhere the draw
// reads gives level 0, margin 0. `margin` is the smaller of the component draw's margin and the distance from u
// to the level's two CDF boundaries sigmoid((b - mu) / s). Unlike the categorical draws this one has products
// feeding sums (mu + c * x, mu + s * logit(u)) that a compiler may contract to FMA (nvcc does by default) and
// calls logf, log1pf and tanhf: backends agree up to rounding, and `margin` says where rounding decides a level.
// TFP's layout (tfd.PixelCNN: the network's last Dense, before TFP's reshape and split) is component-major: K
// blocks of n = 1 + 2C + C(C-1)/2 values [logit, locs(C), scale parameters(C), coefficients(C(C-1)/2)], with
// scale s = (softplus(r) + exp(-7)) * T from the raw value r (TFP's network adds exp(-7) after a softplus) and
// raw coefficients: mu_G += c_0 x_R, mu_B += c_1 x_R + c_2 x_G. Everything else (component, discretisation,
// margin) is the same: TFP's QuantizedDistribution over [low, high] has the bins above with L = high - low + 1.
namespace philox_detail {
PCF_HOST_DEVICE inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
// softplus without overflow: max(r, 0) + log1p(exp(-|r|)).
PCF_HOST_DEVICE inline float softplusf_(float r) { return (r > 0.0f ? r : 0.0f) + log1pf(expf(-fabsf(r))); }
constexpr float kExpMinus7 = 9.118819655545162e-04f;  // exp(-7) in float32, as TFP's tf.exp(-7.)
}  // namespace philox_detail

// The mixture head's parameter layouts (above); the value is the spec's `layout=` index.
enum class MixtureLayout : int32_t { kPixelCnnPP = 0, kTfp = 1 };

// Number of head values per pixel for K components over `channels` image channels (0: layout not defined).
// Both layouts hold the same count (3K grey, 10K RGB).
PCF_HOST_DEVICE inline int mixture_head_values(int k, int channels) {
  return channels == 1 ? 3 * k : channels == 3 ? 10 * k : 0;
}

// The component uniform of a pixel: word 1 of the (image, position, 0, 0) block.
PCF_HOST_DEVICE inline float mixture_component_uniform(uint64_t seed, uint32_t image, uint32_t position) {
  const PhiloxBlock out = philox4x32_10(PhiloxBlock{{image, position, 0u, 0u}}, static_cast<uint32_t>(seed),
                                        static_cast<uint32_t>(seed >> 32));
  return static_cast<float>(out.w[1] >> 8) * 5.9604644775390625e-8f;  // 2^-24: exact
}

// The level of image channel `channel` (0 <= channel < channels) drawn from a pixel's mixture head `v`
// (mixture_head_values(k, channels) floats, contiguous); `drawn` holds the levels of channels < channel at this
// pixel (read only for RGB's coupling). u_component: mixture_component_uniform; u: the channel's uniform01.
PCF_HOST_DEVICE inline int draw_logistic_mixture(const float* v, int k, int channels, int channel, const int* drawn,
                                                 int levels, float temperature, float u_component, float u,
                                                 float* margin = nullptr,
                                                 MixtureLayout layout = MixtureLayout::kPixelCnnPP) {
  const bool tfp = layout == MixtureLayout::kTfp;
  const int n = tfp ? 1 + 2 * channels + channels * (channels - 1) / 2 : 1;  // TFP: one block per component
  float component_margin = 0.0f;
  const int j = draw_categorical_logits(v, k, n, temperature, u_component, &component_margin);
  const float* comp = v + j * n;  // TFP: component j's block
  const int block = channels == 1 ? k : k + 3 * k * channel;
  float mu = tfp ? comp[1 + channel] : v[block + j];
  const float scale_param = tfp ? comp[1 + channels + channel] : v[block + k + j];
  if (scale_param != scale_param) {  // the clip below would turn a NaN log-scale into -7
    if (margin != nullptr) *margin = 0.0f;
    return 0;
  }
  const float half = static_cast<float>(levels - 1) * 0.5f;
  if (channels == 3 && channel > 0) {
    const float x_r = static_cast<float>(drawn[0]) / half - 1.0f;
    const float* coef = comp + 1 + 2 * channels;  // TFP: raw c_0 (G from R), c_1 (B from R), c_2 (B from G)
    if (channel == 1) {
      mu += (tfp ? coef[0] : tanhf(v[k + 2 * k + j])) * x_r;
    } else {
      const float x_g = static_cast<float>(drawn[1]) / half - 1.0f;
      mu += (tfp ? coef[1] : tanhf(v[k + 3 * k + 2 * k + j])) * x_r;
      mu += (tfp ? coef[2] : tanhf(v[k + 6 * k + 2 * k + j])) * x_g;
    }
  }
  const float s = (tfp ? philox_detail::softplusf_(scale_param) + philox_detail::kExpMinus7
                       : expf(scale_param > -7.0f ? scale_param : -7.0f)) *
                  temperature;
  const float t = mu + s * (logf(u) - log1pf(-u));
  const float y = (t + 1.0f) * half - 0.5f;
  if (y != y || !(s > 0.0f) || s > FLT_MAX) {  // NaN somewhere, or no scale: decided by no u
    if (margin != nullptr) *margin = 0.0f;
    return 0;
  }
  const float yk = floorf(y) + 1.0f;
  const int level = yk < 0.0f ? 0 : yk > static_cast<float>(levels - 1) ? levels - 1 : static_cast<int>(yk);
  if (margin != nullptr) {
    float d = component_margin;
    if (level < levels - 1) {  // upper boundary b_level
      const float b = static_cast<float>(2 * level + 1) / static_cast<float>(levels - 1) - 1.0f;
      const float e = philox_detail::sigmoidf_((b - mu) / s) - u;
      if (fabsf(e) < d) d = fabsf(e);
    }
    if (level > 0) {  // lower boundary b_{level-1}
      const float b = static_cast<float>(2 * level - 1) / static_cast<float>(levels - 1) - 1.0f;
      const float e = u - philox_detail::sigmoidf_((b - mu) / s);
      if (fabsf(e) < d) d = fabsf(e);
    }
    *margin = d;
  }
  return level;
}

// The output heads a draw can come from (docs/SEMANTICS.md, "Output heads"). The first three draw image channel c
// from its own n values; kLogisticMixture draws every channel of a pixel from the pixel's whole head
// (draw_logistic_mixture) and goes through draw_pixel_channel.
enum class DrawHead { kBernoulli, kLogits, kProbs, kLogisticMixture };

// One draw from the head's n values at values[0], values[stride], ... (bernoulli: n == 1, the logit). Not for
// kLogisticMixture (its draw reads the whole pixel and the channels drawn before): see draw_pixel_channel.
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

// What a head is to the executors' draw loops: its kind, levels per image channel, mixture components (K, for
// kLogisticMixture) and the image's channels.
struct DrawShape {
  DrawHead kind;
  int levels;
  int components;
  int channels;
  MixtureLayout mixture_layout = MixtureLayout::kPixelCnnPP;  // kLogisticMixture's parameter layout
};

// The level of image channel `channel` of image `image` at raster position `position`, drawn from the head
// buffer's values at that pixel (`pixel`: all of them) with this pixel's Philox uniforms; `drawn` holds the
// levels of channels < channel at the pixel (read only by an RGB mixture's coupling). The one draw both
// executors (column_program.cc, flat_program.h) make.
PCF_HOST_DEVICE inline int draw_pixel_channel(const DrawShape& head, const float* pixel, int channel,
                                              const int32_t* drawn, float temperature, uint64_t seed, uint32_t image,
                                              uint32_t position, float* margin = nullptr) {
  const float u = uniform01(seed, image, position, static_cast<uint32_t>(channel));
  if (head.kind != DrawHead::kLogisticMixture)
    return draw_level(head.kind, pixel + static_cast<ptrdiff_t>(channel) * head.levels, head.levels, 1, temperature,
                      u, margin);
  int prior[2] = {0, 0};  // draw_logistic_mixture reads at most R and G
  for (int c = 0; c < channel && c < 2; ++c) prior[c] = drawn[c];
  return draw_logistic_mixture(pixel, head.components, head.channels, channel, prior, head.levels, temperature,
                               mixture_component_uniform(seed, image, position), u, margin, head.mixture_layout);
}

}  // namespace pcf
