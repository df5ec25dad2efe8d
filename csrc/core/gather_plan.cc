// Core (framework-free C++17): gather-GEMM plans — pieces, segments, packed weights, segment GEMMs.
#include "gather_plan.h"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

namespace pcf {
namespace detail {

// One gathered source run: for destination pixel (i, j) the source pixel (i + oy, j + ox), channels
// [c0, c1), lands in im2col columns [col, col + c1 - c0).
// Source-channel ranges [rlo, rhi) per (tap, destination channel) -> pieces and segments. Destination
// channels with identical ranges on every tap share a segment; beyond kMaxSegments (an irregular kernel
// read from its non-zeros) they share one whose ranges are hulls, which is still exact because packing
// writes zero for every entry the hull adds (weight() returns 0 for non-live entries).
constexpr int kMaxSegments = 16;

void build_pieces_and_segments(const TapSet& ts, int64_t cd, const std::vector<int32_t>& rlo,
                               const std::vector<int32_t>& rhi, const TapOffset& offset, GatherPlan* plan) {
  const int T = ts.num_taps();
  std::vector<int32_t> ulo(T), uhi(T);
  for (int t = 0; t < T; ++t) {
    int32_t lo = INT32_MAX, hi = 0;
    for (int64_t d = 0; d < cd; ++d) {
      const int32_t l = rlo[t * cd + d], h = rhi[t * cd + d];
      if (h > l) {
        lo = std::min(lo, l);
        hi = std::max(hi, h);
      }
    }
    ulo[t] = lo;
    uhi[t] = hi;
    if (hi > lo) {
      int64_t oy, ox;
      offset(t, &oy, &ox);
      plan->pieces.push_back({oy, ox, lo, hi, plan->kcol});
      plan->piece_tap.push_back(t);
      plan->kcol += hi - lo;
    }
  }
  // Piece index per tap (-1 when the tap feeds nothing in this direction).
  std::vector<int64_t> colbase(T, -1);
  for (size_t p = 0; p < plan->pieces.size(); ++p) colbase[plan->piece_tap[p]] = plan->pieces[p].col;

  auto same_ranges = [&](int64_t d, int64_t e) {
    for (int t = 0; t < T; ++t)
      if (rlo[t * cd + d] != rlo[t * cd + e] || rhi[t * cd + d] != rhi[t * cd + e]) return false;
    return true;
  };
  std::vector<std::pair<int64_t, int64_t>> bounds;
  for (int64_t d = 0; d < cd;) {
    int64_t e = d + 1;
    while (e < cd && same_ranges(d, e)) ++e;
    bounds.push_back({d, e});
    d = e;
  }
  if (bounds.size() > static_cast<size_t>(kMaxSegments)) bounds = {{0, cd}};
  for (auto [d0, d1] : bounds) {
    Segment s;
    s.d0 = d0;
    s.d1 = d1;
    for (int t = 0; t < T; ++t) {
      int32_t lo = INT32_MAX, hi = 0;
      for (int64_t d = d0; d < d1; ++d) {
        if (rhi[t * cd + d] > rlo[t * cd + d]) {
          lo = std::min(lo, rlo[t * cd + d]);
          hi = std::max(hi, rhi[t * cd + d]);
        }
      }
      if (hi <= lo) continue;
      const int64_t b = colbase[t] + (lo - ulo[t]), e = colbase[t] + (hi - ulo[t]);
      if (!s.ranges.empty() && s.ranges.back().end == b)
        s.ranges.back().end = e;  // adjacent columns: one longer run for the microkernel
      else
        s.ranges.push_back({b, e});
      s.k += e - b;
    }
    plan->segs.push_back(std::move(s));
  }
}

// Packs every segment's weights: weight(t, s, d) for im2col column (tap t, source channel s).
void pack_segments(const Kernels& kern, const TapWeight& weight, GatherPlan* plan) {
  // im2col column -> (tap, source channel)
  std::vector<int> col_tap(plan->kcol);
  std::vector<int32_t> col_ch(plan->kcol);
  for (size_t p = 0; p < plan->pieces.size(); ++p) {
    const ColPiece& pc = plan->pieces[p];
    for (int32_t c = pc.c0; c < pc.c1; ++c) {
      col_tap[pc.col + c - pc.c0] = plan->piece_tap[p];
      col_ch[pc.col + c - pc.c0] = c;
    }
  }
  const int panel = kern.panel;
  for (Segment& s : plan->segs) {
    const int64_t n = s.d1 - s.d0;
    s.dot = n <= kern.dot_max_n;
    if (s.dot) {
      s.b.assign(n * s.k, 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        int64_t kk = 0;
        for (const KRange& r : s.ranges)
          for (int64_t c = r.begin; c < r.end; ++c, ++kk) s.b[j * s.k + kk] = weight(col_tap[c], col_ch[c], s.d0 + j);
      }
    } else {
      const int64_t panels = (n + panel - 1) / panel;
      s.b.assign(panels * s.k * panel, 0.0f);
      for (int64_t p = 0; p < panels; ++p) {
        float* out = s.b.data() + p * s.k * panel;
        int64_t kk = 0;
        for (const KRange& r : s.ranges)
          for (int64_t c = r.begin; c < r.end; ++c, ++kk)
            for (int64_t j = 0; j < panel && p * panel + j < n; ++j)
              out[kk * panel + j] = weight(col_tap[c], col_ch[c], s.d0 + p * panel + j);
      }
    }
  }
}


// The epilogue for destination channels from d: its bias and residual rows from channel d.
static GemmEpilogue epilogue_from(const GemmEpilogue* epi, int64_t d) {
  if (epi == nullptr) return {};
  GemmEpilogue e = *epi;
  if (e.bias != nullptr) e.bias += d;
  if (e.add != nullptr) e.add += d;
  return e;
}

// Segment s's k ranges in A, and how many.
static const KRange* ranges_of(const GatherPlan& plan, const Segment& s, const ARows& a, int* count) {
  if (a.ranges == nullptr) {
    *count = static_cast<int>(s.ranges.size());
    return s.ranges.data();
  }
  const int64_t g = &s - plan.segs.data();
  *count = a.nranges[g];
  return a.ranges[g];
}

// The ranges' k positions [part.begin, part.end) (cut where they fall inside a range) into `out`, which has room for
// nranges; returns how many. PartRanges holds them: on the stack up to kMaxPartRanges (a 3x3 conv's in-place ranges
// are a handful; a 15x15 kernel's a few hundred), else on the heap.
constexpr int kMaxPartRanges = 64;
struct PartRanges {
  KRange local[kMaxPartRanges];
  std::vector<KRange> heap;
  KRange* room(int n) {
    if (n <= kMaxPartRanges) return local;
    heap.resize(n);
    return heap.data();
  }
};
static int cut_ranges(const KRange* ranges, int nranges, const KPart& part, int64_t k_total, KRange* out) {
  int64_t begin = part.begin, end = part.end < 0 ? k_total : part.end;
  if (begin < 0 || begin > end || end > k_total)
    throw std::logic_error("gemm part [" + std::to_string(begin) + ", " + std::to_string(end) + ") of k " +
                           std::to_string(k_total));
  if (part.a_from_begin) {  // the ranges hold the part's k positions only
    end -= begin;
    begin = 0;
  }
  int count = 0;
  int64_t at = 0;  // k position of the current range's first column
  for (int q = 0; q < nranges; ++q) {
    const int64_t len = ranges[q].end - ranges[q].begin, b = std::max(begin, at), e = std::min(end, at + len);
    if (b < e) {
      out[count++] = {ranges[q].begin + (b - at), ranges[q].begin + (e - at)};
    }
    at += len;
  }
  return count;
}

// Narrows g (a call over a segment's whole k, its B panels `panel_floats` wide per k row, its destination columns
// from `d`) to the part: its k ranges, B from the part's first k row in every panel, the sums from part.init.
static void apply_part(GemmArgs& g, const KPart& part, int64_t k_total, int64_t panel_floats, int64_t d,
                       PartRanges& cut) {
  KRange* room = cut.room(g.nranges);
  g.nranges = cut_ranges(g.ranges, g.nranges, part, k_total, room);
  g.ranges = room;
  g.bpack += part.begin * panel_floats;
  g.panel_stride = k_total * panel_floats;
  if (part.init != nullptr) {
    g.init = part.init + d;
    g.ldinit = part.ldinit;
  }
}

void gemm_segment(const Kernels& kern, const GatherPlan& plan, const Segment& s, const ARows& a, int64_t rows,
                  float* dst, int64_t ldd, const GemmEpilogue* epi, const KPart* part) {
  float* c = dst + s.d0;
  int nranges = 0;
  const KRange* ranges = ranges_of(plan, s, a, &nranges);
  if (s.dot) {
    if (part != nullptr) throw std::logic_error("gemm_segment: a part of a narrow (dot) segment");
    kern.gemm_dot({a.a, a.lda, rows, ranges, nranges, s.k, s.b.data(), s.d1 - s.d0, c, ldd});
    return;
  }
  GemmArgs g{a.a, a.lda, rows, ranges, nranges, s.b.data(), s.d1 - s.d0, c, ldd, epilogue_from(epi, s.d0)};
  PartRanges cut;
  if (part != nullptr) apply_part(g, *part, s.k, kern.panel, s.d0, cut);
  kern.gemm(g);
}

PackedWindow pack_segment_window(const Kernels& kern, const GatherPlan& plan, int seg, int64_t c0, int64_t c1) {
  const Segment& s = plan.segs.at(seg);
  PackedWindow w;
  w.seg = seg;
  w.c0 = c0;
  w.c1 = c1;
  if (s.dot) return w;
  const int64_t panel = kern.panel, unit = gemm_window_unit(kern), width = c1 - c0;
  if (c0 < 0 || c1 > s.d1 - s.d0 || width < 1)
    throw std::logic_error("pack_segment_window: window [" + std::to_string(c0) + ", " + std::to_string(c1) +
                           ") of a " + std::to_string(s.d1 - s.d0) + "-column segment");
  // One panel: the width rounded up to the unit. Wider: whole panels from c0 (the last zero padded).
  w.ldb = width <= panel ? (width + unit - 1) / unit * unit : panel;
  const int64_t panels = (width + w.ldb - 1) / w.ldb;
  w.b.assign(panels * s.k * w.ldb, 0.0f);
  for (int64_t c = c0; c < c1; ++c) {
    const float* from = s.b.data() + (c / panel) * s.k * panel + c % panel;
    float* to = w.b.data() + ((c - c0) / w.ldb) * s.k * w.ldb + (c - c0) % w.ldb;
    for (int64_t kk = 0; kk < s.k; ++kk) to[kk * w.ldb] = from[kk * panel];
  }
  return w;
}

void gemm_packed_window_pair(const Kernels& kern, const GatherPlan& plan, const PackedWindow& w, const float* a,
                             int64_t lda, int64_t rows, const KRange* ranges, int nranges, int64_t k1, int64_t k2,
                             const float* init1, int64_t ldinit1, float* dst1, int64_t ldd1, const GemmEpilogue* epi,
                             const float* init2, int64_t ldinit2, float* dst2, int64_t ldd2) {
  const Segment& s = plan.segs[w.seg];
  if (s.dot) throw std::logic_error("gemm_packed_window_pair: a narrow (dot) segment");
  for (int64_t c = 0; c < w.c1 - w.c0; c += 2 * w.ldb) {  // gemm_pair takes two panels at a time
    const int64_t d = s.d0 + w.c0 + c;
    const float* b = w.b.data() + (c / w.ldb) * s.k * w.ldb;
    kern.gemm_pair({a, lda, rows, ranges, nranges, b + k1 * w.ldb, b + k2 * w.ldb, w.ldb,
                    std::min(2 * w.ldb, w.c1 - w.c0 - c), init1 + d, ldinit1, dst1 + d, ldd1, epilogue_from(epi, d),
                    init2 + d, ldinit2, dst2 + d, ldd2, s.k * w.ldb});
  }
}

void gemm_packed_window(const Kernels& kern, const GatherPlan& plan, const PackedWindow& w, const ARows& a,
                        int64_t rows, float* dst, int64_t ldd, const GemmEpilogue* epi, const KPart* part) {
  const Segment& s = plan.segs[w.seg];
  int nranges = 0;
  const KRange* ranges = ranges_of(plan, s, a, &nranges);
  if (s.dot) {  // B^T rows, dense already: channels [c0, c1) are rows c0.. (gemm_dot has no epilogue)
    if (part != nullptr) throw std::logic_error("gemm_packed_window: a part of a narrow (dot) segment");
    kern.gemm_dot({a.a, a.lda, rows, ranges, nranges, s.k, s.b.data() + w.c0 * s.k, w.c1 - w.c0,
                   dst + s.d0 + w.c0, ldd});
    return;
  }
  GemmArgs g{a.a, a.lda, rows, ranges, nranges, w.b.data(), w.c1 - w.c0, dst + s.d0 + w.c0, ldd,
             epilogue_from(epi, s.d0 + w.c0)};
  g.ldb = w.ldb;
  g.panel_stride = s.k * w.ldb;
  PartRanges cut;
  if (part != nullptr) apply_part(g, *part, s.k, w.ldb, s.d0 + w.c0, cut);
  kern.gemm(g);
}

void gemm_segments(const Kernels& kern, const GatherPlan& plan, const ARows& a, int64_t rows, float* dst, int64_t ldd,
                   const GemmEpilogue* epi) {
  for (const Segment& s : plan.segs) gemm_segment(kern, plan, s, a, rows, dst, ldd, epi);
}

}  // namespace detail
}  // namespace pcf
