// Core (framework-free C++17): the column program on grids (docs/SEMANTICS.md, "Grids") -- each step's ready
// raster step per position, the ring sizes that follow from when each value is written and last read, and the
// strided and transposed convs of a program whose buffers live on coarser grids.
//
// A program with a `grids` statement is scheduled here instead of by delays: every step of phase 0 (all of a
// logistic-mixture model's) is a scheduled step that computes each position of its output grid once, at the first
// raster step at which everything it reads is computed -- ready(p) = max over its reads q of the step from which q
// is readable (the ready step of a scheduled source, which runs earlier in program order; the raster step after
// q's for the image and colour-pass sources) -- before that step's colour passes. Steps of phase > 0 stay in the
// colour passes, on the image grid, and must find every read computed. Because ready is the raster step after the
// latest pixel a value depends on, a causal prediction is always ready at its own position.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

#include "column_program.h"
#include "kernels.h"

namespace pcf {

using grids::floor_div;
using grids::is_grid_conv;
using grids::pos_mod;

namespace {

std::invalid_argument grid_error(const std::string& name, const std::string& what) {
  return std::invalid_argument("step '" + name + "': " + what);
}

std::string grid_text(const Grid& g) {
  return std::to_string(g.ny) + "x" + std::to_string(g.nx) + " grid (1/" + std::to_string(g.fy) + " x 1/" +
         std::to_string(g.fx) + " of the image)";
}


}  // namespace

void ColumnProgram::set_grids(std::vector<Grid> grids) {
  if (!steps_.empty()) throw std::logic_error("set_grids: the grids come before the first step");
  if (grids.size() != buffer_channels_.size())
    throw std::invalid_argument("grids: " + std::to_string(grids.size()) + " grids for " +
                                std::to_string(buffer_channels_.size()) + " buffers");
  if (grids[0] != image_grid_) throw std::invalid_argument("grids: buffer 0 is the image, on the image's grid");
  for (size_t b = 0; b < grids.size(); ++b) {
    const Grid& g = grids[b];
    if (g.fy < 1 || g.fx < 1 || g.ny < 1 || g.nx < 1 || g.ny > h_ / g.fy + 2 || g.nx > w_ / g.fx + 2)
      throw std::invalid_argument("grids: buffer " + std::to_string(b) + "'s " + grid_text(g) +
                                  " is not a grid of the " + std::to_string(h_) + "x" + std::to_string(w_) + " image");
  }
  grids_ = std::move(grids);
  for (size_t b = 0; b < grids_.size(); ++b) buffer_w_[b] = grids_[b].nx;
}

// Per output phase (i mod sy, j mod sx): the taps (ky, kx) with (phase + o - k) divisible by s, reading the coarse
// input at (i div sy + (ry + oy - ky) / sy, ...). Each fine position runs only its phase's live taps.
void ColumnProgram::add_transpose_phases(ProgramStep& st, const ConstTensor& kernel) const {
  const int kh = static_cast<int>(kernel.n), kw = static_cast<int>(kernel.h);
  const int64_t cin = kernel.w, cout = kernel.c;
  std::vector<float> masked(kernel.data.size());
  st.phase_taps.clear();
  st.phase_plans.clear();
  for (int ry = 0; ry < st.sy; ++ry)
    for (int rx = 0; rx < st.sx; ++rx) {
      for (int ky = 0; ky < kh; ++ky)
        for (int kx = 0; kx < kw; ++kx) {
          const bool live = pos_mod(ry + st.oy - ky, st.sy) == 0 && pos_mod(rx + st.ox - kx, st.sx) == 0;
          const size_t at = (size_t(ky) * kw + kx) * cin * cout;
          for (int64_t e = 0; e < cin * cout; ++e) masked[at + e] = live ? kernel.data[at + e] : 0.0f;
        }
      TapSet ts = TapSet::from_kernel(masked.data(), kh, kw, cin, cout);
      detail::GatherPlan plan;
      detail::build_pieces_and_segments(ts, cout, ts.lo, ts.hi,
                                        [&](int t, int64_t* oy, int64_t* ox) {
                                          *oy = (ry + st.oy - ts.ky[t]) / st.sy;  // exact: the tap is live
                                          *ox = (rx + st.ox - ts.kx[t]) / st.sx;
                                        },
                                        &plan);
      detail::pack_segments(active_kernels(),
                            [&](int t, int32_t ci, int64_t o) {
                              return masked[((int64_t(ts.ky[t]) * kw + ts.kx[t]) * cin + ci) * cout + o];
                            },
                            &plan);
      st.phase_taps.push_back(std::move(ts));
      st.phase_plans.push_back(std::move(plan));
    }
}

// Each (buffer, position in its grid) that output position p (in the output grid's raster order) reads.
void ColumnProgram::for_each_grid_read(const ProgramStep& st, int64_t p,
                                       const std::function<void(int, int64_t)>& fn) const {
  const Grid& go = grid(st.out);
  const int64_t i = p / go.nx, j = p % go.nx;
  auto read = [&](int b, int64_t si, int64_t sj) {
    const Grid& g = grid(b);
    if (si >= 0 && si < g.ny && sj >= 0 && sj < g.nx) fn(b, si * g.nx + sj);
  };
  if (st.kind == StepKind::kConv && st.transpose) {
    const detail::GatherPlan& pl = st.phase_plans[pos_mod(i, st.sy) * st.sx + pos_mod(j, st.sx)];
    for (const auto& pc : pl.pieces) read(st.ins[0], floor_div(i, st.sy) + pc.oy, floor_div(j, st.sx) + pc.ox);
  } else if (st.kind == StepKind::kConv) {
    for (const auto& pc : st.plan.pieces) read(st.ins[0], st.sy * i + pc.oy, st.sx * j + pc.ox);
  } else if (st.kind == StepKind::kShift) {
    read(st.ins[0], i + st.dy, j + st.dx);
  } else {
    for (int b : st.ins) read(b, i, j);
  }
}

// The raster step from which a scheduled step may read buffer b at position q: a scheduled source's ready step
// (it runs earlier in program order); the next raster step for the image and colour-pass sources.
int64_t ColumnProgram::available_at(int b, int64_t q) const {
  const int w = writer_[b];
  if (w >= 0 && steps_[w].scheduled) return steps_[w].ready_at[q];
  return q + 1;  // on the image grid: q is the raster step
}

void ColumnProgram::schedule_on_grids(ProgramStep& st) const {
  const std::string& name = st.name;
  const Grid& go = grid(st.out);
  for (int b : st.ins)
    if (b != 0 && writer_[b] < 0) throw grid_error(name, "reads buffer " + std::to_string(b) + ", which no step writes");
  if (st.kind == StepKind::kConv) {
    const Grid& gi = grid(st.ins[0]);
    const bool ok = st.transpose ? gi.fy == go.fy * st.sy && gi.fx == go.fx * st.sx
                                 : go.fy == gi.fy * st.sy && go.fx == gi.fx * st.sx &&
                                       (st.sy != 1 || st.sx != 1 || gi == go);
    if (!ok)
      throw grid_error(name, std::string(st.transpose ? "a transposed" : "a") + " conv with stride " +
                                 std::to_string(st.sy) + "," + std::to_string(st.sx) + " cannot map the " +
                                 grid_text(gi) + " of buffer " + std::to_string(st.ins[0]) + " to the " +
                                 grid_text(go) + " of buffer " + std::to_string(st.out));
  } else {
    for (int b : st.ins)
      if (grid(b) != go)
        throw grid_error(name, "reads buffer " + std::to_string(b) + " on the " + grid_text(grid(b)) +
                                   " into buffer " + std::to_string(st.out) + " on the " + grid_text(go));
    for (const Operand& o : st.operands)
      if (o.is_const && go != image_grid_ && (consts_[o.index].h > 1 || consts_[o.index].w > 1))
        throw grid_error(name, "a constant that varies over the image, on the " + grid_text(go));
  }
  const int64_t positions = int64_t(go.ny) * go.nx;
  if (st.phase > 0 && go == image_grid_ && !is_grid_conv(st)) {
    // A step that reads its own pixel stays in the colour passes when every read is computed by then (an RGB
    // categorical head's colour blocks); one that reads ahead (PixelCNN++'s first convs, before their down-shift)
    // is scheduled like the others, after its pixel is drawn.
    bool in_passes = true;
    for (int64_t p = 0; p < positions && in_passes; ++p)
      for_each_grid_read(st, p, [&](int b, int64_t q) {
        const int w = writer_[b];
        in_passes = in_passes && (w >= 0 && steps_[w].scheduled ? steps_[w].ready_at[q] <= p : q <= p);
      });
    if (in_passes) return;
  }
  st.scheduled = true;
  st.ready_at.assign(positions, 0);
  for (int64_t p = 0; p < positions; ++p)
    for_each_grid_read(st, p, [&](int b, int64_t q) { st.ready_at[p] = std::max(st.ready_at[p], available_at(b, q)); });
  st.order.resize(positions);
  std::iota(st.order.begin(), st.order.end(), int64_t(0));
  std::stable_sort(st.order.begin(), st.order.end(),
                   [&](int64_t a, int64_t b) { return st.ready_at[a] < st.ready_at[b]; });
}

void ColumnProgram::check_grid_head(int buffer) const {
  if (grid(buffer) != image_grid_)
    throw std::invalid_argument("head buffer " + std::to_string(buffer) + " is on the " + grid_text(grid(buffer)) +
                                ", not the image's");
  const int w = writer_[buffer];
  if (w < 0 || !steps_[w].scheduled) return;
  for (int64_t p = 0; p < int64_t(h_) * w_; ++p)
    if (steps_[w].ready_at[p] > p)
      throw std::invalid_argument("head buffer " + std::to_string(buffer) + " at position " + std::to_string(p) +
                                  " is ready only at raster step " + std::to_string(steps_[w].ready_at[p]) +
                                  ": the prediction reads values after its pixel");
}

bool ColumnProgram::same_grid_schedule(const ProgramStep& a, const ProgramStep& b) const {
  return a.scheduled == b.scheduled && grid(a.out) == grid(b.out) && a.ready_at == b.ready_at;
}

// Rows each ring keeps: the smallest R such that no row is overwritten (by the row R below it) before its last
// read. Times are half raster steps: 2t for the scheduled steps of raster step t, 2t + 1 for its colour passes and
// draws, 2t - 1 for the image's slot cleared at the start of step t.
void ColumnProgram::grid_ring_rows() const {
  const size_t nbuf = buffer_channels_.size();
  const int64_t last_step = int64_t(h_) * w_ - 1, never = INT64_MAX;
  std::vector<std::vector<int64_t>> first_write(nbuf), last_read(nbuf);
  for (size_t b = 0; b < nbuf; ++b) {
    first_write[b].assign(grid(static_cast<int>(b)).ny, never);
    last_read[b].assign(grid(static_cast<int>(b)).ny, -1);
  }
  auto write_row = [&](int b, int64_t q, int64_t time) {
    int64_t& w = first_write[b][q / grid(b).nx];
    w = std::min(w, time);
  };
  for (int64_t q = 0; q <= last_step; ++q) write_row(0, q, 2 * q - 1);
  auto read = [&](int b, int64_t q, int64_t time) {
    int64_t& r = last_read[b][q / grid(b).nx];
    r = std::max(r, time);
  };
  for (const ProgramStep& st : steps_) {
    const Grid& go = grid(st.out);
    for (int64_t p = 0; p < int64_t(go.ny) * go.nx; ++p) {
      const int64_t t = st.scheduled ? st.ready_at[p] : p;
      if (t > last_step) continue;  // never computed: nothing the prediction needs reads it
      const int64_t time = st.scheduled ? 2 * t : 2 * t + 1;
      write_row(st.out, p, time);
      for_each_grid_read(st, p, [&](int b, int64_t q) { read(b, q, time); });
    }
  }
  if (head_.buffer >= 0)
    for (int64_t p = 0; p <= last_step; ++p) read(head_.buffer, p, 2 * p + 1);
  for (size_t b = 0; b < nbuf; ++b) {
    const int64_t ny = grid(static_cast<int>(b)).ny;
    std::vector<int64_t> later(ny + 1, never);  // later[z]: the first write of any row >= z
    for (int64_t z = ny - 1; z >= 0; --z) later[z] = std::min(later[z + 1], first_write[b][z]);
    int64_t rows = 1;
    for (int64_t y = 0; y < ny; ++y) {
      if (last_read[b][y] < 0) continue;
      int64_t z = y + 1;
      while (z < ny && later[z] <= last_read[b][y]) ++z;
      rows = std::max(rows, z - y);
    }
    ring_rows_[b] = static_cast<int>(std::min(rows, ny));
  }
}

int64_t ColumnProgram::model_macs_per_image() const {
  int64_t total = 0;
  for (const ProgramStep& st : steps_) {
    if (st.kind != StepKind::kConv) continue;
    const Grid& g = st.transpose ? grid(st.ins[0]) : grid(st.out);  // TF's transposed conv: per input position
    total += st.taps.live_macs_per_pixel() * g.ny * g.nx;
  }
  return total;
}

int64_t ColumnProgram::executed_macs_per_image() const {
  if (!on_grids()) return executed_macs_per_position() * h_ * w_;
  prepare();
  int64_t total = 0;
  for (size_t k = 0; k < steps_.size(); ++k) {
    const ProgramStep& st = steps_[k];
    if (st.kind != StepKind::kConv) continue;
    const Grid& go = grid(st.out);
    if (st.transpose) {  // each fine position: its phase's live taps
      for (int64_t ry = 0; ry < st.sy; ++ry)
        for (int64_t rx = 0; rx < st.sx; ++rx) {
          const int64_t rows = ry < go.ny ? (go.ny - 1 - ry) / st.sy + 1 : 0;
          const int64_t cols = rx < go.nx ? (go.nx - 1 - rx) / st.sx + 1 : 0;
          total += st.phase_taps[ry * st.sx + rx].live_macs_per_pixel() * rows * cols;
        }
    } else if (st.scheduled) {
      total += st.taps.live_macs_per_pixel() * go.ny * go.nx;
    } else {  // a colour-pass conv: whole in each pass that runs it (an upper bound)
      int64_t passes = 0;
      for (const PassPart& part : pass_parts_[k]) passes += part.run ? 1 : 0;
      total += st.taps.live_macs_per_pixel() * passes * go.ny * go.nx;
    }
  }
  return total;
}

}  // namespace pcf
