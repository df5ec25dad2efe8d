// Core (framework-free C++17): masked conv drivers — im2col over live taps, then the microkernels (for
// narrow outputs: the GEMM on the source in place, then a gather-add of its columns).
#include "masked_conv.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <vector>

#include "conv_index.h"
#include "gather_plan.h"
#include "kernels.h"

namespace pcf {

std::string make_geometry(int64_t n, int64_t h, int64_t w, int kh, int kw, int dh, int dw,
                          const std::string& padding, ConvGeometry* g) {
  std::string p = padding;
  for (auto& c : p) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  g->n = n;
  g->h = h;
  g->w = w;
  g->kh = kh;
  g->kw = kw;
  g->dh = dh;
  g->dw = dw;
  const bool same = p == "same";
  g->ho = conv_output_size(h, kh, dh, same);
  g->wo = conv_output_size(w, kw, dw, same);
  g->pad_top = pad_before(kh, dh, same);
  g->pad_left = pad_before(kw, dw, same);
  if (!same && (g->ho < 1 || g->wo < 1)) {
    using std::to_string;
    return "padding='valid' needs an input at least as large as the dilated kernel extent (" +
           to_string(dilated_extent(kh, dh)) + ", " + to_string(dilated_extent(kw, dw)) +
           "), got input spatial size (" + to_string(h) + ", " + to_string(w) + ")";
  }
  return "";
}

namespace {

using detail::ColPiece;
using detail::GatherPlan;
using detail::Segment;
using detail::build_pieces_and_segments;
using detail::gemm_segments;
using detail::pack_segments;

// Pixels per im2col block: the block (pixels x kcol floats) should sit in L2 next to the packed weights.
int64_t block_pixels(int64_t kcol) {
  const int64_t budget_floats = (192 * 1024) / 4;
  int64_t mb = budget_floats / std::max<int64_t>(kcol, 1);
  mb = std::max<int64_t>(24, std::min<int64_t>(mb, 2048));
  return mb / 24 * 24;
}

// Gathers pixels [m0, m0 + rows) of the destination (flattened n, i, j) into col (rows x kcol). Works
// in runs of pixels on one destination row: per run and piece the in-bounds interval is computed once,
// then copied (a plain loop when the piece is at most 8 channels wide, as in a first layer) with the
// out-of-image ends zeroed.
void im2col(const GatherPlan& plan, const float* src, int64_t m0, int64_t rows, float* col) {
  const int64_t per_image = plan.hd * plan.wd, kcol = plan.kcol, cs = plan.cs;
  int64_t r = 0;
  while (r < rows) {
    const int64_t m = m0 + r;
    const int64_t img = m / per_image, i = (m % per_image) / plan.wd, j0 = m % plan.wd;
    const int64_t run = std::min(rows - r, plan.wd - j0);  // pixels j0 .. j0 + run - 1 of row i
    const float* src_img = src + img * plan.hs * plan.ws * cs;
    float* out = col + r * kcol;
    for (const ColPiece& pc : plan.pieces) {
      const int64_t len = pc.c1 - pc.c0;
      const int64_t si = i + pc.oy;
      // Destination columns j whose source column j + ox lies inside the image.
      int64_t lo = 0, hi = 0;
      if (si >= 0 && si < plan.hs) {
        lo = std::max<int64_t>(0, std::min<int64_t>(run, -pc.ox - j0));
        hi = std::max<int64_t>(lo, std::min<int64_t>(run, plan.ws - pc.ox - j0));
      }
      float* d = out + pc.col;
      for (int64_t q = 0; q < lo; ++q) std::memset(d + q * kcol, 0, len * sizeof(float));
      const float* s = src_img + (si * plan.ws + j0 + pc.ox) * cs + pc.c0;
      if (len == 1) {
        for (int64_t q = lo; q < hi; ++q) d[q * kcol] = s[q * cs];
      } else if (len <= 8) {  // a few channels (an RGB first layer): a plain loop, not a libc call per pixel
        for (int64_t q = lo; q < hi; ++q)
          for (int64_t c = 0; c < len; ++c) d[q * kcol + c] = s[q * cs + c];
      } else {
        for (int64_t q = lo; q < hi; ++q) std::memcpy(d + q * kcol, s + q * cs, len * sizeof(float));
      }
      for (int64_t q = hi; q < run; ++q) std::memset(d + q * kcol, 0, len * sizeof(float));
    }
    r += run;
  }
}

// Narrow destinations (every segment <= kern.dot_max_n channels: the input gradient of a first layer
// with 1-4 input channels, a 1-channel head): an im2col block would copy kcol floats per pixel (24 taps
// x 128 channels of dy for a 7x7 mask-A 1->128 layer) to form <= 4 dot products, as many loads as the
// products themselves. Instead, per image, one GEMM with no copy at all multiplies every source pixel
// by every (piece, destination channel) weight column, Z[p, piece, d] = sum_c src[p, c] W[piece, c, d]
// (M = pixels, K = source channels, N = pieces x destination channels: a shape the panel microkernel
// runs near its peak), and each destination pixel then adds its pieces' entries of Z at their offsets:
// dst[q, d] = sum_piece Z[q + offset, piece, d], over the pieces that land inside the image. A weight
// outside a piece's live range is 0 in the GEMM's B (never read by the gather form either).
void run_gather_narrow(const Kernels& kern, const GatherPlan& plan, const float* src, float* dst,
                       const Parallel& par) {
  const int64_t npieces = static_cast<int64_t>(plan.pieces.size()), cd = plan.cd, cs = plan.cs;
  const int64_t nz = npieces * cd, hws = plan.hs * plan.ws, hwd = plan.hd * plan.wd;
  if (nz == 0) {
    std::fill(dst, dst + plan.n * hwd * cd, 0.0f);
    return;
  }
  // The packed segments' weights back into B[c][piece * cd + d], then into the gemm's panels.
  std::vector<int64_t> col_piece(plan.kcol);
  std::vector<int32_t> col_ch(plan.kcol);
  for (int64_t p = 0; p < npieces; ++p)
    for (int32_t c = plan.pieces[p].c0; c < plan.pieces[p].c1; ++c) {
      col_piece[plan.pieces[p].col + c - plan.pieces[p].c0] = p;
      col_ch[plan.pieces[p].col + c - plan.pieces[p].c0] = c;
    }
  const int64_t panel = kern.panel, panels = (nz + panel - 1) / panel;
  std::vector<float> bpack(panels * cs * panel, 0.0f);
  for (const Segment& sg : plan.segs) {
    int64_t kk = 0;
    for (const KRange& r : sg.ranges)
      for (int64_t col = r.begin; col < r.end; ++col, ++kk)
        for (int64_t d = sg.d0; d < sg.d1; ++d) {
          const int64_t z = col_piece[col] * cd + d;
          bpack[((z / panel) * cs + col_ch[col]) * panel + z % panel] = sg.b[(d - sg.d0) * sg.k + kk];
        }
  }
  const KRange all{0, cs};
  // dst rows [r0, r1) (over n x hd) of one image's or the whole batch's Z (z: image img0's first pixel).
  auto gather_rows = [&](const float* z, int64_t img0, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t img = r / plan.hd, i = r % plan.hd;
      const float* zi = z + (img - img0) * hws * nz;
      for (int64_t j = 0; j < plan.wd; ++j) {
        float* o = dst + ((img * plan.hd + i) * plan.wd + j) * cd;
        for (int64_t d = 0; d < cd; ++d) o[d] = 0.0f;
        for (int64_t p = 0; p < npieces; ++p) {
          const int64_t si = i + plan.pieces[p].oy, sj = j + plan.pieces[p].ox;
          if (si < 0 || si >= plan.hs || sj < 0 || sj >= plan.ws) continue;
          const float* zp = zi + (si * plan.ws + sj) * nz + p * cd;
          for (int64_t d = 0; d < cd; ++d) o[d] += zp[d];
        }
      }
    }
  };
  if (plan.n >= par.num_threads()) {  // images per thread, each image's Z in cache
    par.for_each(plan.n, hws * (cs + 1) * nz, [&](int64_t i0, int64_t i1) {
      std::vector<float> z(hws * nz + 16);
      for (int64_t img = i0; img < i1; ++img) {
        kern.gemm({src + img * hws * cs, cs, hws, &all, 1, bpack.data(), nz, z.data(), nz});
        gather_rows(z.data(), img, img * plan.hd, (img + 1) * plan.hd);
      }
    });
    return;
  }
  // Fewer images than threads (batch 1): the GEMM split by pixel blocks, then the gather by rows.
  std::vector<float> z(plan.n * hws * nz + 16);
  const int64_t total = plan.n * hws, mb = 96, blocks = (total + mb - 1) / mb;
  par.for_each(blocks, mb * (cs + 1) * nz, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * mb, rows = std::min(mb, total - m0);
      kern.gemm({src + m0 * cs, cs, rows, &all, 1, bpack.data(), nz, z.data() + m0 * nz, nz});
    }
  });
  par.for_each(plan.n * plan.hd, plan.wd * (npieces * cd + 1),
               [&](int64_t r0, int64_t r1) { gather_rows(z.data(), 0, r0, r1); });
}

void run_gather_gemm(const GatherPlan& plan, const float* src, float* dst, const Parallel& par) {
  const Kernels& kern = active_kernels();
  const int64_t total = plan.n * plan.hd * plan.wd;
  if (total == 0) return;
  if (!plan.segs.empty() && std::all_of(plan.segs.begin(), plan.segs.end(), [](const Segment& s) { return s.dot; })) {
    run_gather_narrow(kern, plan, src, dst, par);
    return;
  }
  const int64_t mb = block_pixels(plan.kcol);
  const int64_t blocks = (total + mb - 1) / mb;
  const int64_t cost = mb * (plan.kcol + 1) * plan.cd;
  par.for_each(blocks, cost, [&](int64_t b0, int64_t b1) {
    std::vector<float> col(mb * plan.kcol + 16);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * mb, rows = std::min(mb, total - m0);
      im2col(plan, src, m0, rows, col.data());
      gemm_segments(kern, plan, {col.data(), plan.kcol}, rows, dst + m0 * plan.cd, plan.cd);
    }
  });
}

// The gather plan of one direction. Forward (sign +1): source x, destination y, destination channel
// o reads source channels [lo, hi) of tap t at offset (ky*dh - pad_top, kx*dw - pad_left). Transposed
// (sign -1): source dy, destination dx, the negated offsets, ranges given per (tap, input channel).
GatherPlan make_plan(const TapSet& ts, const ConvGeometry& g, int sign, const std::vector<int32_t>& rlo,
                     const std::vector<int32_t>& rhi) {
  GatherPlan plan;
  plan.n = g.n;
  plan.hs = sign > 0 ? g.h : g.ho;
  plan.ws = sign > 0 ? g.w : g.wo;
  plan.cs = sign > 0 ? ts.cin : ts.cout;
  plan.hd = sign > 0 ? g.ho : g.h;
  plan.wd = sign > 0 ? g.wo : g.w;
  plan.cd = sign > 0 ? ts.cout : ts.cin;
  build_pieces_and_segments(ts, plan.cd, rlo, rhi,
                            [&](int t, int64_t* oy, int64_t* ox) {
                              *oy = sign * tap_offset(ts.ky[t], g.dh, g.pad_top);
                              *ox = sign * tap_offset(ts.kx[t], g.dw, g.pad_left);
                            },
                            &plan);
  return plan;
}

GatherPlan forward_plan(const TapSet& ts, const ConvGeometry& g) { return make_plan(ts, g, +1, ts.lo, ts.hi); }

inline float kernel_at(const TapSet& ts, const float* kernel, int t, int64_t ci, int64_t o) {
  return kernel[((int64_t(ts.ky[t]) * ts.kw + ts.kx[t]) * ts.cin + ci) * ts.cout + o];
}

}  // namespace

void masked_conv2d_forward(const TapSet& ts, const ConvGeometry& g, const float* x, const float* kernel, float* y,
                           const Parallel& par) {
  GatherPlan plan = forward_plan(ts, g);
  pack_segments(active_kernels(),
                [&](int t, int32_t ci, int64_t o) { return ts.live(t, ci, o) ? kernel_at(ts, kernel, t, ci, o) : 0.0f; },
                &plan);
  run_gather_gemm(plan, x, y, par);
}

void masked_conv2d_backprop_input(const TapSet& ts, const ConvGeometry& g, const float* dy, const float* kernel,
                                  float* dx, const Parallel& par) {
  // The transposed problem: dx[q, ci] = sum_t sum_o dy[q - offset_t, o] * W[t, ci, o]. Its source
  // channel ranges per (tap, ci) are the hull of the outputs o that read ci through t (for colour groups
  // the centre tap gives a suffix of the output blocks).
  std::vector<int32_t> rlo, rhi;
  ts.transposed_ranges(&rlo, &rhi);
  GatherPlan plan = make_plan(ts, g, -1, rlo, rhi);
  pack_segments(active_kernels(),
                [&](int t, int32_t o, int64_t ci) { return ts.live(t, ci, o) ? kernel_at(ts, kernel, t, ci, o) : 0.0f; },
                &plan);
  run_gather_gemm(plan, dy, dx, par);
}

void masked_conv2d_backprop_filter(const TapSet& ts, const ConvGeometry& g, const float* x, const float* dy,
                                   float* dkernel, const Parallel& par) {
  const Kernels& kern = active_kernels();
  GatherPlan plan = forward_plan(ts, g);  // im2col of x exactly as the forward pass reads it
  const int64_t cout = ts.cout, kcol = plan.kcol;
  std::fill(dkernel, dkernel + int64_t(ts.kh) * ts.kw * ts.cin * cout, 0.0f);
  const int64_t total = g.n * g.ho * g.wo;
  if (total == 0 || kcol == 0) return;

  // Each chunk of pixels reduces into its own (kcol x cout) accumulator; chunks are summed at the end.
  const int64_t mb = block_pixels(kcol);
  const int64_t blocks = (total + mb - 1) / mb;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(blocks, par.num_threads()));
  std::vector<std::vector<float>> acc(chunks);
  const int panel = kern.panel;
  par.for_each(chunks, blocks / chunks * mb * kcol * cout, [&](int64_t c0, int64_t c1) {
    std::vector<float> col(mb * kcol + 16, 0.0f);  // +16: the microkernel reads a few columns past the end
    std::vector<float> bpack;
    for (int64_t ch = c0; ch < c1; ++ch) {
      std::vector<float>& a = acc[ch];
      a.assign(kcol * cout, 0.0f);
      for (int64_t b = blocks * ch / chunks; b < blocks * (ch + 1) / chunks; ++b) {
        const int64_t m0 = b * mb, rows = std::min(mb, total - m0);
        im2col(plan, x, m0, rows, col.data());
        for (const Segment& s : plan.segs) {
          const int64_t n = s.d1 - s.d0, panels = (n + panel - 1) / panel;
          bpack.assign(panels * rows * panel, 0.0f);
          for (int64_t p = 0; p < panels; ++p) {
            const int64_t w = std::min<int64_t>(panel, n - p * panel);
            for (int64_t r = 0; r < rows; ++r)
              std::memcpy(&bpack[(p * rows + r) * panel], dy + (m0 + r) * cout + s.d0 + p * panel, w * sizeof(float));
          }
          for (const KRange& kr : s.ranges)
            kern.gemm_at_b({col.data(), kcol, rows, kr.begin, kr.end - kr.begin, bpack.data(), n,
                            a.data() + kr.begin * cout + s.d0, cout});
        }
      }
    }
  });
  for (int64_t ch = 1; ch < chunks; ++ch)
    for (int64_t i = 0; i < kcol * cout; ++i) acc[0][i] += acc[ch][i];

  // Scatter the live entries into the dense kernel layout; everything else stays exactly 0.
  for (size_t p = 0; p < plan.pieces.size(); ++p) {
    const ColPiece& pc = plan.pieces[p];
    const int t = plan.piece_tap[p];
    for (int32_t ci = pc.c0; ci < pc.c1; ++ci) {
      const float* row = acc[0].data() + (pc.col + ci - pc.c0) * cout;
      float* out = dkernel + ((int64_t(ts.ky[t]) * ts.kw + ts.kx[t]) * ts.cin + ci) * cout;
      for (int64_t o = 0; o < cout; ++o)
        if (ts.live(t, ci, o)) out[o] = row[o];
    }
  }
}

}  // namespace pcf
