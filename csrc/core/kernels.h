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

// What gemm applies to each sum before it stores it, in registers (the column program's bias add, activation and
// residual add fused into its conv): t = act(sum + bias[n]), then c = t + add[m * ldadd + n] (or add + t when
// add_first), each step optional: bias / add nullptr for none (bias: one value per column of the call; add: one row
// per row of C), act an ActFn value other than kErf (-1: none). The same float operations in the same order as
// binary_rows' adds and act_rows, so every value is the one those calls give on the stored sums.
struct GemmEpilogue {
  const float* bias = nullptr;
  int32_t act = -1;
  float alpha = 0.0f;
  const float* add = nullptr;
  int64_t ldadd = 0;
  bool add_first = false;
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
  GemmEpilogue epi = {};
  // B as one panel narrower than `panel` (n <= ldb <= panel, ldb a multiple of the vector length): each k row
  // ldb floats after the last. 0: `panel`. The split executor packs a thread's column window so (column_split.cc).
  int64_t ldb = 0;
  // Floats from one B panel to the next. 0: the ranges' total k times ldb (B holds exactly these k rows). A call
  // over part of a packed B's k rows (bpack pointing at its first row) passes the whole panel's size.
  int64_t panel_stride = 0;
  // The sums start from init[m * ldinit + n] instead of 0 (nullptr: 0): a product over k ranges continued where an
  // earlier call over the ranges before them stopped, with the same float operations in the same order as one
  // call over all of them (the executor's row prefixes, docs/SAMPLER.md).
  const float* init = nullptr;
  int64_t ldinit = 0;
};

// Two products of the same A rows over the same k ranges, their FMAs interleaved in one tile loop (independent chains
// that fill the FMA pipes where one product alone waits on its latency): C1 = init1 + A B1, then the epilogue, and
// C2 = init2 + A B2 without one. B1 and B2 are one panel each (n <= ldb <= panel, as GemmArgs::ldb), or two
// (panel_stride below). Each output is the same float operations in the same order as a gemm call with that init
// and B. The executor's carry
// (column_program.cc): a position's own taps at the centre and the next position's tap to its left, which read
// the same input pixel.
struct GemmPairArgs {
  const float* a;
  int64_t lda, m;
  const KRange* ranges;
  int nranges;
  const float* b1;
  const float* b2;
  int64_t ldb, n;
  const float* init1;
  int64_t ldinit1;
  float* c1;
  int64_t ldc1;
  GemmEpilogue epi;
  const float* init2;
  int64_t ldinit2;
  float* c2;
  int64_t ldc2;
  // Up to two panels: n <= 2 x ldb, the second panel's k rows panel_stride floats after the first (0: one panel).
  int64_t panel_stride = 0;
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

// binary_rows' operands: `rows` rows of n outputs (the images of one position), row k of y at y + k * yrow.
// y[k * yrow + i] = binary(fn, a[k * arow + i * astride], b[k * brow + i * bstride]): a stride is 1 (a row) or
// 0 (one value broadcast), a row step 0 reads the same row for every row (a constant shared by the images).
struct BinaryRows {
  int32_t fn;
  const float* a;
  int64_t astride, arow;
  const float* b;
  int64_t bstride, brow;
  float* y;
  int64_t yrow, n, rows;
};

struct Kernels {
  const char* isa;
  int panel;       // B panel width in floats (= widest register tile)
  int dot_max_n;   // use gemm_dot when N <= this
  void (*gemm)(const GemmArgs&);
  void (*gemm_dot)(const GemmDotArgs&);
  void (*gemm_at_b)(const GemmAtBArgs&);
  // The column program's elementwise rows, vectorised (exp, expm1, tanh, sigmoid, log1p by range reduction and
  // polynomials; erf through libm). fn is program.h's ActFn / BinaryFn value, as elementwise.h's scalar act() /
  // binary(), which they match to a few ulp (docs/KERNELS.md). y may alias x (or a, b). One call computes `rows`
  // rows (a fused op over every image of a position: one dispatch, not one per image); each row's values are the
  // ones a call for that row alone gives, whatever its place or its neighbours.
  // y[k * yrow + i] = act(fn, x[k * xrow + i], alpha) for i < n, k < rows.
  void (*act_rows)(int32_t fn, float alpha, const float* x, int64_t xrow, float* y, int64_t yrow, int64_t n,
                   int64_t rows);
  void (*binary_rows)(const BinaryRows& r);
  // philox.h's draw_categorical_logits over z[0..n) (stride 1, n <= kDrawLogitsMaxLevels) with the weights
  // e_k = exp(z_k / T - m) computed by the vectorised exp above (within 1 ulp of libm's expf) and summed in vector
  // lanes; the max, the inverse-CDF walk and its margin are philox.h's code. docs/KERNELS.md.
  int (*draw_logits)(const float* z, int n, float temperature, float u, float* margin);
  void (*gemm_pair)(const GemmPairArgs&);
};

const Kernels& active_kernels();
// For tests and benchmarks: "avx512", "avx2", "generic"; nullptr if unknown or unsupported here.
const Kernels* kernels_by_name(const char* isa);

}  // namespace pcf
