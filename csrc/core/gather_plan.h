// Core (framework-free C++17): the gather-GEMM plan shared by the masked conv and the cached executor.
//
// A destination pixel's channels are a sum over pieces (source offset, source channel range) of source
// pixels times weights. Destination channels that read identical ranges form a segment with its own
// packed weights (kernels.h layout) and im2col column ranges, so no masked-out product is formed.
#pragma once

#include <cstdint>
#include <functional>
#include <new>
#include <vector>

#include "kernels.h"
#include "tapset.h"

namespace pcf {
namespace detail {

// One gathered source run: for destination pixel (i, j) the source pixel (i + oy, j + ox), channels
// [c0, c1), lands in im2col columns [col, col + c1 - c0).
struct ColPiece {
  int64_t oy, ox;
  int32_t c0, c1;
  int64_t col;
};

// Floats on 64-byte boundaries: a segment's panels (k rows of `panel` floats) and a packed window's k rows (ldb
// floats, a multiple of 16 on AVX-512) then start on a cache line each, so no vector load of B straddles two lines
// (std::vector's 16-byte alignment splits all of them).
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};

struct Segment {
  int64_t d0 = 0, d1 = 0;       // destination channels
  std::vector<KRange> ranges;   // im2col columns read
  int64_t k = 0;                // total length of ranges
  bool dot = false;             // narrow: B^T rows for gemm_dot, else panels for gemm
  std::vector<float, CacheLineAllocator<float>> b;  // packed weights
};

struct GatherPlan {
  int64_t n = 0, hs = 0, ws = 0, cs = 0;  // source
  int64_t hd = 0, wd = 0, cd = 0;         // destination
  std::vector<ColPiece> pieces;           // one per live tap, ordered as the taps
  std::vector<int> piece_tap;
  int64_t kcol = 0;
  std::vector<Segment> segs;
};

using TapOffset = std::function<void(int t, int64_t* oy, int64_t* ox)>;
// Source-channel ranges [rlo, rhi) per (tap, destination channel) -> pieces and segments.
void build_pieces_and_segments(const TapSet& ts, int64_t cd, const std::vector<int32_t>& rlo,
                               const std::vector<int32_t>& rhi, const TapOffset& offset, GatherPlan* plan);
using TapWeight = std::function<float(int t, int32_t src_channel, int64_t dst_channel)>;
// Packs every segment's weights for the given microkernels.
void pack_segments(const Kernels& kern, const TapWeight& weight, GatherPlan* plan);
// The A rows the segments' GEMMs read: row r at a + r * lda. ranges == nullptr: an im2col block (lda >= kcol), each
// segment's own column ranges. Else A is read in place from its source (the cached executor's ring): ranges[g] is
// segment g's nranges[g] k ranges as offsets from a row's start, covering the same lengths in the same order as its
// column ranges (so its packed B holds): the same products are summed in the same order.
struct ARows {
  const float* a;
  int64_t lda;
  const KRange* const* ranges = nullptr;
  const int* nranges = nullptr;
};

// Part of one segment's product (the executor's row prefixes, docs/SAMPLER.md): only positions [begin, end) of its k
// order (end < 0: to the last), the sums starting from init (nullptr: zeros; row r at init + r * ldinit, indexed by
// destination channel as dst is). Each output is the same float operations in the same order as the whole
// product's: a call over [0, k0) without an epilogue, then one over [k0, k) from its output, writes the bits one
// call over all of it writes. Not for a narrow (`dot`) segment, which sums along k in vector lanes.
struct KPart {
  int64_t begin = 0, end = -1;
  const float* init = nullptr;
  int64_t ldinit = 0;
  // A's ranges (the ARows' own, in place) cover only k positions [begin, end), from their start: the caller maps a
  // piece read elsewhere (the carry: the next position's left tap reads this position's pixel).
  bool a_from_begin = false;
};

// Runs the segments' GEMMs on the A rows of `rows` destination pixels; destination row r is written at
// dst + r * ldd. epi (optional, narrow `dot` segments excepted): the epilogue the microkernel applies before its
// stores, its bias indexed by destination channel.
void gemm_segments(const Kernels& kern, const GatherPlan& plan, const ARows& a, int64_t rows, float* dst, int64_t ldd,
                   const GemmEpilogue* epi = nullptr);
// The same for one segment of the plan (its destination channels only).
void gemm_segment(const Kernels& kern, const GatherPlan& plan, const Segment& s, const ARows& a, int64_t rows,
                  float* dst, int64_t ldd, const GemmEpilogue* epi = nullptr, const KPart* part = nullptr);
// Columns a window starts on: a multiple of every ISA's vector length that divides the B panel (kernels.h).
inline int64_t gemm_window_unit(const Kernels& kern) { return kern.panel < 16 ? kern.panel : 16; }

// One thread's column window [c0, c1) of segment `seg` (c0 a multiple of gemm_window_unit, or any c0 for a narrow
// `dot` segment, which has no unit) with its weights copied out of the segment's panels into a dense block: k rows
// of ldb floats (the width rounded up to gemm_window_unit, zero padded) for a window of at most a panel; a wider
// window as whole panels from c0 (ldb = the panel, each k rows, the last zero padded), so that the microkernel's
// wide tiles (kernels_isa.inc, gemm_wide) run a batch-1 thread's share of a conv as one tile over several panels.
// A window of a shared panel reads part of every k row of that panel, and the cache's line-pair and stream
// prefetchers fetch the other threads' columns with it: each core's L2 would then
// hold the whole model, not its share (keras.io: 1.45 MB on two 1 MB L2s). A dense window keeps each thread's
// share of the weights apart. A narrow (`dot`) segment's window keeps no copy (its B^T rows are dense already).
struct PackedWindow {
  int seg = 0;
  int64_t c0 = 0, c1 = 0, ldb = 0;
  std::vector<float, CacheLineAllocator<float>> b;
};
PackedWindow pack_segment_window(const Kernels& kern, const GatherPlan& plan, int seg, int64_t c0, int64_t c1);
// The window's two products of one A row block over k ranges of `len` positions (Kernels::gemm_pair): destination
// dst1 = init1 + A B[k1, k1 + len) with the epilogue, and dst2 = init2 + A B[k2, k2 + len) without one; every pointer
// indexed by destination channel as gemm_packed_window's dst.
void gemm_packed_window_pair(const Kernels& kern, const GatherPlan& plan, const PackedWindow& w, const float* a,
                             int64_t lda, int64_t rows, const KRange* ranges, int nranges, int64_t k1, int64_t k2,
                             const float* init1, int64_t ldinit1, float* dst1, int64_t ldd1, const GemmEpilogue* epi,
                             const float* init2, int64_t ldinit2, float* dst2, int64_t ldd2);
// Destination channels [s.d0 + c0, s.d0 + c1) of the window's segment only, from its packed weights. Each element is
// the same sum in the same order as gemm_segment's (the microkernels accumulate each output column on its own, over
// k in range order), so threads that split a segment into windows write bit-identical outputs.
void gemm_packed_window(const Kernels& kern, const GatherPlan& plan, const PackedWindow& w, const ARows& a,
                        int64_t rows, float* dst, int64_t ldd, const GemmEpilogue* epi = nullptr,
                        const KPart* part = nullptr);

}  // namespace detail
}  // namespace pcf
