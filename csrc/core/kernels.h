// Core (framework-free C++17): the register-blocked GEMM microkernels and elementwise rows, one build per
// instruction set.
//
// The conv drivers (masked_conv.cc) gather an im2col block over live taps only and call these on it.
// kernels_isa.inc is compiled three times (AVX-512, AVX2+FMA, SSE2) into separate namespaces and
// active_kernels() picks the best the CPU supports, so one binary runs on any x86-64.
#pragma once

#include <cstdint>

namespace pcf {

// A run of contiguous columns [begin, end) of the im2col block.
struct KRange {
  int64_t begin, end;
};

// C[m, n] = sum over the k ranges of A[m, k] * B[k, n] for m < M, n < N, written (not accumulated).
// B is packed in panels of `panel` columns: panel p holds, for each k in range order, `panel` floats
// (zero-padded past N). A is row-major with leading dimension lda.
struct GemmArgs {
  const float* a;
  int64_t lda, m;
  const KRange* ranges;
  int nranges;
  const float* bpack;
  int64_t n;
  float* c;
  int64_t ldc;
  // B as one panel narrower than `panel` (n <= ldb <= panel, ldb a multiple of the vector length): each k row
  // ldb floats after the last. 0: `panel`. The split executor packs a thread's column window so (column_split.cc).
  int64_t ldb = 0;
};

// The same product for narrow N (a few output channels): B^T packed as N rows of K contiguous floats.
struct GemmDotArgs {
  const float* a;
  int64_t lda, m;
  const KRange* ranges;
  int nranges;
  int64_t k;            // total length of the ranges = row length of bt
  const float* bt;      // [n][k]
  int64_t n;
  float* c;
  int64_t ldc;
};

// C[k, n] += sum_m A[m, kbegin + k] * B[m, n] for k < K, n < N: the filter-gradient product.
// B is a block of dy packed in panels of `panel` columns ([panel][m][panel floats], zero padded).
struct GemmAtBArgs {
  const float* a;
  int64_t lda, m;
  int64_t kbegin, k;
  const float* bpack;
  int64_t n;
  float* c;
  int64_t ldc;
};

// The most levels draw_logits takes (its weights live on the stack); draw_pixel_channel_cpu (draw_cpu.h) sends
// wider heads to philox.h's scalar draw.
constexpr int kDrawLogitsMaxLevels = 1024;

struct Kernels {
  const char* isa;
  int panel;       // B panel width in floats (= widest register tile)
  int dot_max_n;   // use gemm_dot when N <= this
  void (*gemm)(const GemmArgs&);
  void (*gemm_dot)(const GemmDotArgs&);
  void (*gemm_at_b)(const GemmAtBArgs&);
  // The column program's elementwise rows, vectorised (exp, expm1, tanh, sigmoid, log1p by range reduction and
  // polynomials; erf through libm). fn is program.h's ActFn / BinaryFn value, as elementwise.h's scalar act() /
  // binary(), which they match to a few ulp (docs/KERNELS.md). y may alias x (or a, b).
  // y[k] = act(fn, x[k], alpha) for k < n.
  void (*act_row)(int32_t fn, float alpha, const float* x, float* y, int64_t n);
  // y[k] = binary(fn, a[k * astride], b[k * bstride]) for k < n; a stride is 1 (a row) or 0 (one value broadcast).
  void (*binary_row)(int32_t fn, const float* a, int64_t astride, const float* b, int64_t bstride, float* y,
                     int64_t n);
  // philox.h's draw_categorical_logits over z[0..n) (stride 1, n <= kDrawLogitsMaxLevels) with the weights
  // e_k = exp(z_k / T - m) computed by the vectorised exp above (within 1 ulp of libm's expf) and summed in vector
  // lanes; the max, the inverse-CDF walk and its margin are philox.h's code. docs/KERNELS.md.
  int (*draw_logits)(const float* z, int n, float temperature, float u, float* margin);
};

const Kernels& active_kernels();
// For tests and benchmarks: "avx512", "avx2", "generic"; nullptr if unknown or unsupported here.
const Kernels* kernels_by_name(const char* isa);

}  // namespace pcf
