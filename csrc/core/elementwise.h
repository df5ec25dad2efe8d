// Core (framework-free C++17, CUDA-compatible): the value of one activation or binary function, written once
// for the GPU executor (flat_program.h) and its host emulation: the reference definition. The CPU executor
// runs the vectorised rows of kernels_isa.inc instead, which match these to a few ulp (docs/KERNELS.md,
// tests/test_elementwise_rows.py). The functions are passed as program.h's enum values (plain ints here, so
// device code needs no std headers).
#pragma once

#include <math.h>

#include <cstdint>

#include "host_device.h"

namespace pcf {
namespace elementwise {

// One activation of ActFn's value fn; alpha: the leaky relu's slope.
PCF_HOST_DEVICE inline float act(int32_t fn, float x, float alpha) {
  switch (fn) {  // ActFn's order
    case 0: return x > 0.0f ? x : 0.0f;                            // relu
    case 1: return fminf(fmaxf(x, 0.0f), 6.0f);                    // relu6
    case 2: return x > 0.0f ? x : expm1f(x);                       // elu
    case 3: {                                                      // selu
      const float scale = 1.0507009873554805f, a = 1.6732632423543772f;
      return x > 0.0f ? scale * x : scale * a * expm1f(x);
    }
    case 4: return tanhf(x);
    case 5: return 1.0f / (1.0f + expf(-x));                       // sigmoid
    case 6: return x > 20.0f ? x : log1pf(expf(x));                // softplus
    case 7: return x / (1.0f + fabsf(x));                          // softsign
    case 8: return x > 0.0f ? x : alpha * x;                       // leaky relu
    case 9: return -x;
    case 10: return expf(x);
    case 11: return x * x;
    case 12: return fabsf(x);
    default: return erff(x);                                       // 13: erf
  }
}

// One binary function of BinaryFn's value fn.
PCF_HOST_DEVICE inline float binary(int32_t fn, float u, float v) {
  switch (fn) {  // BinaryFn's order
    case 0: return u + v;
    case 1: return u - v;
    case 2: return u * v;
    case 3: return u / v;
    case 4: return u < v ? v : u;  // std::max(u, v)
    default: return v < u ? v : u;  // std::min(u, v)
  }
}

}  // namespace elementwise
}  // namespace pcf
