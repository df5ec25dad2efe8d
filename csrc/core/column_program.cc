// Core (framework-free C++17): the cached incremental executor of a column program, and its builder from the
// program record (build_from_spec).
#include "column_program.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <mutex>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "checks.h"
#include "conv_index.h"
#include "draw_cpu.h"
#include "kernels.h"
#include "program_spec.h"

namespace pcf {

namespace {

std::invalid_argument step_error(const std::string& name, const std::string& what) {
  return std::invalid_argument("step '" + name + "': " + what);
}

// One conv's epilogue: at most this many fused ops and operands (run_epilogue binds them on the stack).
constexpr int kMaxEpilogueOps = 64, kMaxEpilogueRows = 160;

// The elementwise rows are the ISA kernels' (kernels.h), called with these enums' values.
static_assert(int(ActFn::kRelu) == 0 && int(ActFn::kTanh) == 4 && int(ActFn::kSigmoid) == 5 &&
              int(ActFn::kAbs) == 12 && int(ActFn::kErf) == 13, "kernels.h act_row's function values");
static_assert(int(BinaryFn::kAdd) == 0 && int(BinaryFn::kDiv) == 3 && int(BinaryFn::kMin) == 5,
              "kernels.h binary_row's function values");

}  // namespace

ColumnProgram::ColumnProgram(int height, int width, int channels, std::vector<int64_t> buffer_channels,
                             bool flattenable)
    : h_(height), w_(width), c_(channels), buffer_channels_(std::move(buffer_channels)), flattenable_(flattenable) {
  if (h_ < 1 || w_ < 1 || c_ < 1)
    throw std::invalid_argument("image shape must be positive, got (" + std::to_string(h_) + ", " +
                                std::to_string(w_) + ", " + std::to_string(c_) + ")");
  if (buffer_channels_.empty() || buffer_channels_[0] != c_)
    throw std::invalid_argument("buffer 0 must be the image with " + std::to_string(c_) + " channels");
  buffer_delay_.assign(buffer_channels_.size(), {0, 0});
  buffer_w_.assign(buffer_channels_.size(), w_);
  writer_.assign(buffer_channels_.size(), -1);
  image_grid_ = Grid{1, 1, h_, w_};
}

void ColumnProgram::check_buffer(int b, const char* what, const std::string& name) const {
  if (b < 0 || b >= static_cast<int>(buffer_channels_.size()))
    throw step_error(name, std::string(what) + " buffer " + std::to_string(b) + " does not exist (" +
                               std::to_string(buffer_channels_.size()) + " buffers)");
}

int ColumnProgram::add_const(ConstTensor t) {
  // An empty dimension would make pixel() read an empty array (found by the spec fuzzer: shape (0, 1, 1, 1)).
  if (t.n < 1 || t.h < 1 || t.w < 1 || t.c < 1)
    throw std::invalid_argument("constant shape (" + std::to_string(t.n) + ", " + std::to_string(t.h) + ", " +
                                std::to_string(t.w) + ", " + std::to_string(t.c) +
                                ") must have every dimension >= 1");
  if (static_cast<int64_t>(t.data.size()) != t.n * t.h * t.w * t.c)
    throw std::invalid_argument("constant data has " + std::to_string(t.data.size()) + " floats for shape (" +
                                std::to_string(t.n) + ", " + std::to_string(t.h) + ", " + std::to_string(t.w) +
                                ", " + std::to_string(t.c) + ")");
  if ((t.h != 1 && t.h != h_) || (t.w != 1 && t.w != w_))
    throw std::invalid_argument("constant spatial shape (" + std::to_string(t.h) + ", " + std::to_string(t.w) +
                                ") does not broadcast to the image (" + std::to_string(h_) + ", " +
                                std::to_string(w_) + ")");
  consts_.push_back(std::move(t));
  prepared_ = false;
  return static_cast<int>(consts_.size()) - 1;
}

void ColumnProgram::add_step(const Step& step, const ConstTensor* kernel) {
  ProgramStep st;
  static_cast<Step&>(st) = step;
  const std::string& name = st.name;
  check_buffer(st.out, "output", name);
  for (const Operand& o : st.operands)
    if (!o.is_const) st.ins.push_back(o.index);
  const bool one_input = st.kind != StepKind::kBinary && st.kind != StepKind::kConcat;
  if (one_input && (st.operands.size() != 1 || st.operands[0].is_const))
    throw step_error(name, std::string("a ") + name_of(st.kind) + " step reads exactly one buffer");
  if (one_input) check_buffer(st.ins[0], "input", name);
  const int64_t cout = buffer_channels_[st.out];
  switch (st.kind) {
    case StepKind::kConv:
      add_conv(st, kernel);
      break;
    case StepKind::kBinary:
      check_binary(st);
      break;
    case StepKind::kAct:
      if (buffer_channels_[st.ins[0]] != cout) throw step_error(name, "activation changes the channel count");
      break;
    case StepKind::kConcat:
      check_concat(st);
      break;
    case StepKind::kGather:
      if (static_cast<int64_t>(st.channels.size()) != cout)
        throw step_error(name, "gather of " + std::to_string(st.channels.size()) + " channels into a buffer of " +
                                   std::to_string(cout));
      for (int32_t ch : st.channels)
        if (ch < 0 || ch >= buffer_channels_[st.ins[0]]) throw step_error(name, "gathered channel out of range");
      break;
    case StepKind::kSoftmax: {
      const int64_t cin = buffer_channels_[st.ins[0]];
      if (st.group < 1 || cin % st.group != 0 || cin != cout)
        throw step_error(name, "softmax groups of " + std::to_string(st.group) + " do not tile " +
                                   std::to_string(cin) + " channels");
      break;
    }
    case StepKind::kReduce:
      if (cout != 1) throw step_error(name, "a channel reduction writes one channel");
      break;
    case StepKind::kShift:
      if (buffer_channels_[st.ins[0]] != cout) throw step_error(name, "a shift changes the channel count");
      break;
  }
  check_channel_phases(st);
  const std::string delay_text = std::to_string(st.delay_y) + "," + std::to_string(st.delay_x);
  if (std::abs(st.delay_y) > 2 * h_ + 2 || std::abs(st.delay_x) > 4 * w_ + 4)  // no run that long: never a hang
    throw step_error(name, "delay " + delay_text + " is beyond the image (" + std::to_string(h_) + "x" +
                               std::to_string(w_) + ")");
  if (st.delayed() && (st.phase != 0 || !st.phase_runs.empty()))
    throw step_error(name, "a delayed step (delay=" + delay_text + ") runs before the colour passes: its phase must be 0");
  if (on_grids())
    schedule_on_grids(st);  // column_program_grids.cc
  else
    check_schedule(st);
  writer_[st.out] = static_cast<int>(steps_.size());
  buffer_delay_[st.out] = {st.delay_y, st.delay_x};
  if (st.delayed()) delayed_.push_back(static_cast<int>(steps_.size()));
  steps_.push_back(std::move(st));
  prepared_ = false;
}

void ColumnProgram::add_conv(ProgramStep& st, const ConstTensor* kernel) {
  const std::string& name = st.name;
  const int64_t cin = buffer_channels_[st.ins[0]], cout = buffer_channels_[st.out];
  if (kernel == nullptr || kernel->w != cin || kernel->c != cout ||
      static_cast<int64_t>(kernel->data.size()) != kernel->n * kernel->h * cin * cout)
    throw step_error(name, "a conv needs its kernel (kh, kw, " + std::to_string(cin) + ", " + std::to_string(cout) +
                               ") with every weight");
  const int kh = static_cast<int>(kernel->n), kw = static_cast<int>(kernel->h);
  const float* weights = kernel->data.data();
  if (!st.offset_taps && !st.same_padding && (kh != 1 || kw != 1))
    throw step_error(name, "padding 'valid' with a " + std::to_string(kh) + "x" + std::to_string(kw) +
                               " kernel changes the image size");
  st.taps = TapSet::from_kernel(weights, kh, kw, cin, cout);
  // A conv with offset taps (pad + VALID) starts at (oy, ox); SAME / VALID place the kernel as TF does.
  const int64_t pad_top = st.offset_taps ? -int64_t(st.oy) : pad_before(kh, st.dh, st.same_padding);
  const int64_t pad_left = st.offset_taps ? -int64_t(st.ox) : pad_before(kw, st.dw, st.same_padding);
  const TapSet& ts = st.taps;
  detail::build_pieces_and_segments(ts, cout, ts.lo, ts.hi,
                                    [&](int t, int64_t* oy, int64_t* ox) {
                                      *oy = tap_offset(ts.ky[t], st.dh, pad_top);
                                      *ox = tap_offset(ts.kx[t], st.dw, pad_left);
                                    },
                                    &st.plan);
  if (flattenable_) {  // the GPU tables' layout; the CPU executor reads only the packed copy below
    st.live_kernel.resize(size_t(ts.num_taps()) * cin * cout);
    for (int t = 0; t < ts.num_taps(); ++t)
      std::memcpy(st.live_kernel.data() + size_t(t) * cin * cout,
                  weights + (int64_t(ts.ky[t]) * ts.kw + ts.kx[t]) * cin * cout, size_t(cin * cout) * sizeof(float));
  }
  detail::pack_segments(active_kernels(),
                        [&](int t, int32_t ci, int64_t o) {
                          return weights[((int64_t(ts.ky[t]) * ts.kw + ts.kx[t]) * cin + ci) * cout + o];
                        },
                        &st.plan);
  if (st.transpose) add_transpose_phases(st, *kernel);  // column_program_grids.cc
}

void ColumnProgram::check_binary(const ProgramStep& st) const {
  const std::string& name = st.name;
  const int64_t cout = buffer_channels_[st.out];
  if (st.operands.size() != 2 || st.ins.empty())
    throw step_error(name, "a binary step takes two buffers, or one buffer and one constant");
  for (int b : st.ins) {
    check_buffer(b, "input", name);
    if (buffer_channels_[b] != 1 && buffer_channels_[b] != cout)
      throw step_error(name, "input buffer " + std::to_string(b) + " has " + std::to_string(buffer_channels_[b]) +
                                 " channels, output " + std::to_string(cout));
  }
  for (const Operand& o : st.operands) {
    if (!o.is_const) continue;
    if (o.index < 0 || o.index >= static_cast<int>(consts_.size()))
      throw step_error(name, "constant " + std::to_string(o.index) + " does not exist");
    if (consts_[o.index].c != 1 && consts_[o.index].c != cout)
      throw step_error(name, "constant has " + std::to_string(consts_[o.index].c) + " channels, output " +
                                 std::to_string(cout));
  }
}

void ColumnProgram::check_concat(const ProgramStep& st) const {
  const std::string& name = st.name;
  int64_t total = 0;
  for (const Operand& o : st.operands) {
    if (o.is_const) {
      if (o.index < 0 || o.index >= static_cast<int>(consts_.size())) throw step_error(name, "unknown constant");
      total += consts_[o.index].c;
    } else {
      check_buffer(o.index, "input", name);
      total += buffer_channels_[o.index];
    }
  }
  if (total != buffer_channels_[st.out])
    throw step_error(name, "concatenated channels " + std::to_string(total) + " != output " +
                               std::to_string(buffer_channels_[st.out]));
}

// Output channel c depends on the first channel_phase[c] image channels at its own pixel (<= the step's
// phase, the largest equal to it): the colour pass that computes it.
void ColumnProgram::check_channel_phases(ProgramStep& st) const {
  if (st.phase_runs.empty()) return;
  const std::string& name = st.name;
  const int64_t cout = buffer_channels_[st.out];
  int64_t total = 0;
  for (size_t k = 0; k < st.phase_runs.size(); k += 2) {
    if (k + 1 >= st.phase_runs.size() || st.phase_runs[k + 1] < 1)
      throw step_error(name, "channel phases are (phase, count >= 1) runs");
    total += st.phase_runs[k + 1];
  }
  if (total != cout)
    throw step_error(name, std::to_string(total) + " channel phases for an output of " + std::to_string(cout) +
                               " channels");
  int top = -1;
  for (size_t k = 0; k < st.phase_runs.size(); k += 2) {
    const int64_t p = st.phase_runs[k];
    if (p < 0 || p > st.phase)
      throw step_error(name, "channel phase " + std::to_string(p) + " outside [0, step phase " +
                                 std::to_string(st.phase) + "]");
    top = std::max(top, static_cast<int>(p));
    st.channel_phase.insert(st.channel_phase.end(), static_cast<size_t>(st.phase_runs[k + 1]), static_cast<int>(p));
  }
  if (top != st.phase)
    throw step_error(name, "the largest channel phase " + std::to_string(top) + " is not the step's phase " +
                               std::to_string(st.phase));
}

// Each buffer the step reads, with the offset (rows, columns) it reads it at: a conv's live taps, a shift's
// offset, (0, 0) for the elementwise kinds. An offset that never lands in the image is left out.
void ColumnProgram::for_each_read(const ProgramStep& st, const std::function<void(int, int64_t, int64_t)>& fn) const {
  if (st.kind == StepKind::kConv) {
    for (const auto& pc : st.plan.pieces)
      if (pc.oy > -h_ && pc.oy < h_ && pc.ox > -w_ && pc.ox < w_) fn(st.ins[0], pc.oy, pc.ox);
  } else if (st.kind == StepKind::kShift) {
    if (st.dy > -h_ && st.dy < h_ && st.dx > -w_ && st.dx < w_) fn(st.ins[0], st.dy, st.dx);
  } else {
    for (int b : st.ins) fn(b, 0, 0);
  }
}

// docs/SEMANTICS.md, "Delays": a step of delay (dy, dx) computes (i, j) at raster step ready(dy, dx, i, j), before
// the colour passes; (0, 0) at its own step, in its colour pass. A read of buffer b at offset o finds its value
// computed when: both are colour-pass steps and o is at or before (0, 0) (the phases order the passes); else, in
// every column j whose source column j + ox is in the image, b's ready step at (oy, j + ox) is at most the
// reader's at (0, j) -- a colour-pass b read by a delayed reader counting as delay (0, 1) (it runs after the
// delayed steps), same-step reads of delayed steps being in program order.
void ColumnProgram::check_schedule(const ProgramStep& st) const {
  for_each_read(st, [&](int b, int64_t oy, int64_t ox) {
    auto [sy, sx] = buffer_delay_[b];
    const bool normal_src = sy == 0 && sx == 0;
    bool ok = true;
    if (!st.delayed() && normal_src) {
      ok = oy < 0 || (oy == 0 && ox <= 0);
    } else {
      if (st.delayed() && normal_src) sx = 1;
      for (int64_t j = std::max<int64_t>(0, -ox); j < std::min<int64_t>(w_, w_ - ox) && ok; ++j)
        ok = ready(sy, sx, oy, j + ox) <= ready(st.delay_y, st.delay_x, 0, j);
    }
    if (ok) return;
    using std::to_string;
    std::string msg = "a live tap reads offset (" + std::string(oy >= 0 ? "+" : "") + to_string(oy) + ", " +
                      (ox >= 0 ? "+" : "") + to_string(ox) + ") of buffer " + to_string(b) + " (delay " +
                      to_string(buffer_delay_[b].first) + "," + to_string(buffer_delay_[b].second) +
                      "), which is not computed yet when this step (delay " + to_string(st.delay_y) + "," +
                      to_string(st.delay_x) + ") runs: ";
    if (!st.delayed() && normal_src)
      msg += "after the current position in raster order; the cached executor needs every live tap at or before "
             "it unless the step is delayed (delay=)";
    else
      msg += "the delays do not order the reads";
    throw step_error(st.name, msg);
  });
}

void ColumnProgram::set_head(const HeadSpec& head) {
  check_buffer(head.buffer, "head", "head");
  if (on_grids()) check_grid_head(head.buffer);  // column_program_grids.cc
  if (head.kind == DrawHead::kLogisticMixture) {
    set_mixture_head(head);
    return;
  }
  if (head.levels < 1 || buffer_channels_[head.buffer] != int64_t(c_) * head.levels)
    throw std::invalid_argument("head buffer has " + std::to_string(buffer_channels_[head.buffer]) +
                                " channels, expected image channels " + std::to_string(c_) + " x levels " +
                                std::to_string(head.levels));
  if (buffer_delay_[head.buffer] != std::make_pair(0, 0))
    throw std::invalid_argument("head buffer " + std::to_string(head.buffer) + " is computed with delay " +
                                std::to_string(buffer_delay_[head.buffer].first) + "," +
                                std::to_string(buffer_delay_[head.buffer].second) + ": the draws read it at delay 0,0");
  head_ = head;
}

// docs/SEMANTICS.md, "Logistic-mixture heads": one head per pixel in PixelCNN++'s layout, all of it computed
// before the pixel's first draw (the colour coupling happens inside the draw).
void ColumnProgram::set_mixture_head(const HeadSpec& head) {
  const int64_t values = mixture_head_values(head.components, c_);
  if (values == 0)
    throw std::invalid_argument("a logistic-mixture head draws grey (1 image channel) or RGB (3) images, got " +
                                std::to_string(c_) + " image channels");
  if (head.components < 1 || head.levels < 2)
    throw std::invalid_argument("a logistic-mixture head needs components >= 1 and levels >= 2, got components " +
                                std::to_string(head.components) + ", levels " + std::to_string(head.levels));
  if (buffer_channels_[head.buffer] != values)
    throw std::invalid_argument(
        "head buffer has " + std::to_string(buffer_channels_[head.buffer]) + " channels, expected " +
        std::to_string(values) + " for a logistic mixture of " + std::to_string(head.components) + " components (" +
        (head.mixture_layout == MixtureLayout::kTfp
             ? "TFP's layout: K blocks of [logit, locs, scales, coefficients]"
             : c_ == 1 ? "grey: [logits, means, log_scales] x K"
                       : "RGB: [logits, then per channel means, log_scales, coeffs] x K") +
        ")");
  for (const ProgramStep& st : steps_)
    if (st.out == head.buffer && st.phase != 0)
      throw std::invalid_argument("step '" + st.name + "' writes the logistic-mixture head at phase " +
                                  std::to_string(st.phase) +
                                  ": a mixture head may not depend on any image channel of its own pixel");
  head_ = head;
}

void ColumnProgram::prepare() const {
  // Concurrent sample() calls on one program (several Python threads) must not race on the lazy setup.
  static std::mutex prepare_mutex;
  std::lock_guard<std::mutex> lock(prepare_mutex);
  if (prepared_) return;
  {
    std::lock_guard<std::mutex> plans_lock(split_plans_.mutex);  // plans of the program as it was
    split_plans_.plans.clear();
  }
  // Per step and colour pass p: the channels pass p computes, as conv segments or a channel range. With
  // channel phases, a channel of phase q is computed in pass q only (readers at this pixel have a phase
  // >= q, the draw of image channel c reads head channels of phase <= c). Without them a step's phase is
  // only an upper bound for its channels, so the step runs whole in every pass 0..phase.
  pass_parts_.assign(steps_.size(), std::vector<PassPart>(c_ + 1));
  for (size_t k = 0; k < steps_.size(); ++k) {
    const ProgramStep& st = steps_[k];
    auto in_pass = [&](int64_t ch, int p) {
      return st.channel_phase.empty() ? p <= st.phase : st.channel_phase[ch] == p;
    };
    const int64_t cout = buffer_channels_[st.out];
    for (int p = 0; p <= c_; ++p) {
      PassPart& part = pass_parts_[k][p];
      part.lo = cout;
      part.hi = 0;
      if (st.delayed()) continue;  // run_delayed computes it, before the colour passes
      for (int64_t ch = 0; ch < cout; ++ch)
        if (in_pass(ch, p)) {
          part.lo = std::min(part.lo, ch);
          part.hi = ch + 1;
        }
      part.run = part.lo < part.hi;
      if (!part.run) continue;
      if (st.kind == StepKind::kConv) {
        for (size_t g = 0; g < st.plan.segs.size(); ++g) {
          bool any = false;
          for (int64_t ch = st.plan.segs[g].d0; ch < st.plan.segs[g].d1 && !any; ++ch) any = in_pass(ch, p);
          if (any) part.segs.push_back(static_cast<int>(g));
        }
        part.whole = part.segs.size() == st.plan.segs.size();
      } else {
        // Elementwise kinds compute [lo, hi) only; the others (mixing channels) run whole.
        part.whole = !(st.kind == StepKind::kAct || st.kind == StepKind::kBinary || st.kind == StepKind::kGather) ||
                     (part.lo == 0 && part.hi == cout);
      }
    }
  }
  plan_epilogues();
  pass_steps_.assign(c_ + 1, {});
  for (int p = 0; p <= c_; ++p)
    for (size_t k = 0; k < steps_.size(); ++k)
      if (pass_parts_[k][p].run && fused_into_[k] < 0) pass_steps_[p].push_back(static_cast<int>(k));
  // Rows a buffer's cache must hold: its own row plus the furthest row above that a live tap reads. With delays,
  // at raster step t the buffer's newest row is at most t / W - dy_b + 2 and the reader's oldest at least
  // t / W - dy_r - 1 (+ oy): dy_r - dy_b + 4 - oy rows.
  ring_rows_.assign(buffer_channels_.size(), 1);
  for (const ProgramStep& st : steps_)
    for_each_read(st, [&](int b, int64_t oy, int64_t) {
      int64_t rows = 1 - oy;
      if (st.delayed() || buffer_delay_[b] != std::make_pair(0, 0))
        rows = std::max<int64_t>(rows, int64_t(st.delay_y) - buffer_delay_[b].first + 4 - oy);
      ring_rows_[b] = std::max<int>(ring_rows_[b], static_cast<int>(std::min<int64_t>(rows, int64_t(h_) + 1)));
    });
  if (on_grids()) grid_ring_rows();  // column_program_grids.cc: from each value's write and last read
  plan_row_prefixes();
  prepared_ = true;
}

int64_t ColumnProgram::const_batch() const {
  int64_t n = 1;
  for (const ConstTensor& t : consts_) n = std::max(n, t.n);
  return n;
}

int64_t ColumnProgram::cache_floats_per_image() const {
  prepare();
  int64_t total = 0;
  for (size_t b = 0; b < buffer_channels_.size(); ++b)
    if (!ring_elided_[b]) total += ring_rows_[b] * buffer_w_[b] * buffer_channels_[b];
  return total + scratch_floats_;
}

int64_t ColumnProgram::macs_per_position() const {
  int64_t total = 0;
  for (const ProgramStep& st : steps_)
    if (st.kind == StepKind::kConv) total += st.taps.live_macs_per_pixel();
  return total;
}

const char* ColumnProgram::step_kind(int k) const { return name_of(steps_.at(k).kind); }

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

int64_t ColumnProgram::executed_macs_per_position() const {
  prepare();
  int64_t total = 0;
  for (size_t k = 0; k < steps_.size(); ++k) {
    const ProgramStep& st = steps_[k];
    if (st.kind != StepKind::kConv) continue;
    if (st.delayed()) {  // run_delayed: once per position
      total += st.taps.live_macs_per_pixel();
      continue;
    }
    const int64_t cout = buffer_channels_[st.out];
    for (const PassPart& part : pass_parts_[k]) {
      if (!part.run) continue;
      if (part.whole) {
        total += st.taps.live_macs_per_pixel();
        continue;
      }
      for (int g : part.segs)  // live multiply-adds of the segment's destination channels
        for (int64_t o = st.plan.segs[g].d0; o < st.plan.segs[g].d1; ++o)
          for (int t = 0; t < st.taps.num_taps(); ++t) total += st.taps.hi[t * cout + o] - st.taps.lo[t * cout + o];
    }
  }
  return total;
}

constexpr size_t kMaxCarrySegments = 16;  // run_step's per-segment range arrays (gather_plan.cc makes at most 16)

// A conv qualifies when its plan's leading pieces read rows above that are final when it computes a row's first
// position (below); programs on grids schedule their steps otherwise.
void ColumnProgram::plan_row_prefixes() const {
  row_prefix_.assign(steps_.size(), RowPrefix{});
  prefix_floats_ = 0;
  if (!row_prefixes_ || on_grids()) return;
  for (size_t k = 0; k < steps_.size(); ++k) {
    const ProgramStep& st = steps_[k];
    if (st.kind != StepKind::kConv || st.transpose || st.ins.size() != 1) continue;
    const int in = st.ins[0];
    if (in == st.out || ring_elided_[in]) continue;
    const detail::GatherPlan& pl = st.plan;
    RowPrefix rp;
    int64_t left = 0, right = 0;  // how far the pieces reach left and right of the position
    for (const detail::ColPiece& pc : pl.pieces) {  // taps in raster order: the rows above come first
      if (pc.oy >= 0 || pc.col != rp.cols) break;
      ++rp.npieces;
      rp.cols += pc.c1 - pc.c0;
      rp.min_oy = std::min(rp.min_oy, pc.oy);
      left = std::max(left, -pc.ox);
      right = std::max(right, pc.ox);
    }
    if (rp.npieces == 0) continue;
    // The prefix is summed when the step computes a row's first position (i, 0): the rows above it reads must be
    // final then at every column. Raster steps relative to row i's start (ready(): a delayed input or step
    // computes its positions later, or earlier); at the same raster step the delayed steps run first, in program
    // order (the input's writer before this step), then the colour passes.
    int64_t max_oy = rp.min_oy;
    for (int q = 0; q < rp.npieces; ++q) max_oy = std::max(max_oy, pl.pieces[q].oy);
    const auto [in_dy, in_dx] = buffer_delay_[in];
    const int64_t t_in = (max_oy + in_dy) * w_ + std::min<int64_t>(w_ - 1 + in_dx, w_);
    const int64_t t_first = int64_t(st.delay_y) * w_ + std::min<int64_t>(st.delay_x, w_);
    const bool in_delayed = in_dy != 0 || in_dx != 0;
    if (!(t_in < t_first || (t_in == t_first && in_delayed))) continue;
    rp.jl = std::min<int64_t>(left, w_);
    rp.jh = std::max<int64_t>(rp.jl, w_ - right);
    bool any = false;
    for (const detail::Segment& seg : pl.segs) {
      int64_t kp = 0;  // the segment's leading k positions in columns [0, cols)
      for (size_t q = 0; q < seg.ranges.size() && !seg.dot; ++q) {
        const KRange& r = seg.ranges[q];
        if (r.begin >= rp.cols) break;
        kp += std::min(r.end, rp.cols) - r.begin;
        if (r.end > rp.cols) break;
      }
      rp.k_pre.push_back(kp);
      any = any || kp > 0;
    }
    if (!any) continue;
    // Where a slice's tiles are tall enough to keep the FMA pipes busy, a prefix must pay for itself in FMAs: a
    // delayed conv's is summed once per row on its own, and a short one saves fewer FMAs per register tile than its
    // row-start GEMMs and its sums' loads cost (keras.io's 7x7 mask A on one channel, 21 k: batch 16 2% faster
    // without it). Where a position's dependent chain is the time (Slice::chains_only), every prefix shortens it
    // (the same conv's: batch 1 2% slower without it).
    int64_t most = 0;
    for (int64_t kp : rp.k_pre) most = std::max(most, kp);
    rp.chains_only = st.delayed() || most < kMinPrefixK;
    bool once = st.phase == 0;  // the carry's adds must run once per position: in pass 0 only
    for (int ph : st.channel_phase) once = once && ph == 0;
    if (once && pl.pieces.size() == static_cast<size_t>(rp.npieces) + 2) {
      const detail::ColPiece &left = pl.pieces[rp.npieces], &centre = pl.pieces[rp.npieces + 1];
      const int64_t len = left.c1 - left.c0;
      bool carry = left.oy == 0 && left.ox == -1 && centre.oy == 0 && centre.ox == 0 && left.c0 == centre.c0 &&
                   left.c1 == centre.c1 && left.col == rp.cols && centre.col == rp.cols + len;
      for (size_t g = 0; g < pl.segs.size() && carry; ++g)
        carry = !pl.segs[g].dot && rp.k_pre[g] == rp.cols && pl.segs[g].k == rp.cols + 2 * len &&
                pl.segs[g].ranges.back().end == rp.cols + 2 * len;
      if (carry && pl.segs.size() <= kMaxCarrySegments) {
        rp.carry = len;
        rp.carry_c0 = left.c0;
      }
    }
    rp.on = true;
    rp.offset = prefix_floats_;
    prefix_floats_ += w_ * buffer_channels_[st.out];
    row_prefix_[k] = std::move(rp);
  }
}

// Row i's prefix sums, for what the caller computes at its positions: windows (split mode), or the colour pass's
// segments (part), or every segment. Inside the image (every piece's row and column), an image's positions [jl, jh)
// read their pieces in place from the ring (a row's positions one input pixel apart: lda = the input's channels) in
// one GEMM; the positions at the borders, and every position of a row whose pieces reach above the image, gather
// theirs (zeros outside) one position at a time, as gather_columns does.
constexpr int64_t kPrefixTileRows = 6;  // the AVX-512 and AVX2 microkernels' register tile rows (kernels_isa.inc MR)

void ColumnProgram::row_prefix(Slice& s, const ProgramStep& st, const RowPrefix& rp, int64_t i, const PassPart* part,
                               const std::vector<std::shared_ptr<const detail::PackedWindow>>* windows) const {
  const Kernels& kern = active_kernels();
  const detail::GatherPlan& pl = st.plan;
  const int in = st.ins[0];
  const int64_t cout = buffer_channels_[st.out], cin = buffer_channels_[in];
  float* pre = s.pre + s.nb * rp.offset;  // [nb][W][cout]
  auto gemm = [&](const detail::ARows& a, int64_t rows, float* dst, int64_t ldd) {
    if (windows != nullptr) {
      for (const auto& w : *windows)
        if (rp.k_pre[w->seg] > 0) {
          const detail::KPart kp{0, rp.k_pre[w->seg]};
          detail::gemm_packed_window(kern, pl, *w, a, rows, dst, ldd, nullptr, &kp);
        }
      return;
    }
    auto one = [&](size_t g) {
      if (rp.k_pre[g] == 0) return;
      const detail::KPart kp{0, rp.k_pre[g]};
      detail::gemm_segment(kern, pl, pl.segs[g], a, rows, dst, ldd, nullptr, &kp);
    };
    if (part != nullptr) {
      for (int g : part->segs) one(static_cast<size_t>(g));
    } else {
      for (size_t g = 0; g < pl.segs.size(); ++g) one(g);
    }
  };
  auto gathered = [&](int64_t j) {
    float* col = s.col.data();
    for (int64_t img = 0; img < s.nb; ++img) {
      float* row = col + img * rp.cols;
      for (int q = 0; q < rp.npieces; ++q) {
        const detail::ColPiece& pc = pl.pieces[q];
        const int64_t si = i + pc.oy, sj = j + pc.ox, len = pc.c1 - pc.c0;
        if (si >= 0 && sj >= 0 && sj < w_)
          std::memcpy(row + pc.col, s.px(*this, in, si, img, sj) + pc.c0, len * sizeof(float));
        else
          std::memset(row + pc.col, 0, len * sizeof(float));
      }
    }
    gemm({col, rp.cols}, s.nb, pre + j * cout, w_ * cout);
  };
  if (!gather_in_place_ || i + rp.min_oy < 0 || rp.jl >= rp.jh) {
    for (int64_t j = 0; j < w_; ++j) gathered(j);
  } else {
    // Each segment's leading k positions as ring offsets from piece 0's source at (i, jl) of image 0.
    const detail::ColPiece& p0 = pl.pieces[0];
    const float* base = s.px(*this, in, i + p0.oy, 0, rp.jl + p0.ox) + p0.c0;
    KRange* kr = s.kranges.data();
    for (size_t g = 0; g < pl.segs.size(); ++g) {
      s.seg_ranges[g] = kr;
      int count = 0;
      for (const KRange& cr : pl.segs[g].ranges) {
        if (rp.k_pre[g] == 0 || cr.begin >= rp.cols) break;
        const int64_t cend = std::min(cr.end, rp.cols);
        for (int q = 0; q < rp.npieces; ++q) {  // the pieces the column range covers, in column order
          const detail::ColPiece& pc = pl.pieces[q];
          const int64_t b = std::max(cr.begin, pc.col), e = std::min(cend, pc.col + (pc.c1 - pc.c0));
          if (b >= e) continue;
          const int64_t off = (s.px(*this, in, i + pc.oy, 0, rp.jl + pc.ox) + pc.c0 - base) + (b - pc.col);
          if (count > 0 && kr[count - 1].end == off)
            kr[count - 1].end = off + (e - b);  // adjacent in the ring too
          else
            kr[count++] = {off, off + (e - b)};
        }
        if (cr.end > rp.cols) break;
      }
      s.seg_nranges[g] = count;
      kr += count;
    }
    // A GEMM's rows are an image's positions (lda: one input pixel) or, when an image has fewer inside positions
    // than the slice has images and than a register tile has rows, a position's images (lda: the ring's image
    // stride; a VQ-VAE prior's 7x7 conv on a 7-wide grid has one inside position): taller tiles either way.
    const int64_t img_stride = buffer_w_[in] * cin;
    if (rp.jh - rp.jl >= std::min<int64_t>(s.nb, kPrefixTileRows)) {
      for (int64_t img = 0; img < s.nb; ++img)
        gemm({base + img * img_stride, cin, s.seg_ranges.data(), s.seg_nranges.data()}, rp.jh - rp.jl,
             pre + (img * w_ + rp.jl) * cout, cout);
    } else {
      for (int64_t j = rp.jl; j < rp.jh; ++j)
        gemm({base + (j - rp.jl) * cin, img_stride, s.seg_ranges.data(), s.seg_nranges.data()}, s.nb,
             pre + j * cout, w_ * cout);
    }
    for (int64_t j = 0; j < rp.jl; ++j) gathered(j);
    for (int64_t j = rp.jh; j < w_; ++j) gathered(j);
  }
}

void ColumnProgram::run_pass(Slice& s, int64_t i, int64_t j, int p, int64_t* ns) const {
  for (const int k : pass_steps_[p]) {  // the steps with a part in pass p not computed by a conv's epilogue
    const PassPart& part = pass_parts_[k][p];
    const int64_t t0 = ns != nullptr ? now_ns() : 0;
    int64_t fused_ns;
    if (s.member != nullptr)
      fused_ns = run_split(s, static_cast<int>(k), s.member->plan->pass[k][p], i, j, part.whole ? nullptr : &part, p, ns);
    else {
      run_step(s, steps_[k], i, j, part.whole ? nullptr : &part);
      fused_ns = epilogue_[k].empty() ? 0 : run_epilogue(s, static_cast<int>(k), i, j, p, ns);
    }
    if (ns != nullptr) ns[k] += now_ns() - t0 - fused_ns;
  }
}

void ColumnProgram::run_steps(Slice& s, int64_t i, int64_t j, int min_phase, int64_t* ns) const {
  for (size_t k = 0; k < steps_.size(); ++k) {
    const ProgramStep& st = steps_[k];
    if (st.phase < min_phase || st.delayed() || fused_into_[k] >= 0) continue;
    const int64_t t0 = ns != nullptr ? now_ns() : 0;
    int64_t fused_ns;
    if (s.member != nullptr) {
      fused_ns = run_split(s, static_cast<int>(k), s.member->plan->forced[k], i, j, nullptr, -1, ns);
    } else {
      run_step(s, st, i, j);
      fused_ns = epilogue_[k].empty() ? 0 : run_epilogue(s, static_cast<int>(k), i, j, -1, ns);
    }
    if (ns != nullptr) ns[k] += now_ns() - t0 - fused_ns;
  }
}

void ColumnProgram::run_delayed(Slice& s, int64_t t, int64_t* ns) const {
  if (on_grids()) return run_scheduled(s, t, ns);  // column_program_grids.cc
  const int64_t positions = int64_t(h_) * w_;
  for (size_t m = 0; m < delayed_.size(); ++m) {
    const int k = delayed_[m];
    if (fused_into_[k] >= 0) continue;  // computed by its conv's epilogue, at the same positions
    const ProgramStep& st = steps_[k];
    int64_t& q = s.next[m];  // the step's next position: ready() is nondecreasing in raster order
    const int64_t t0 = ns != nullptr ? now_ns() : 0;
    const StepSplit* sp = s.member == nullptr ? nullptr
                          : s.member->teacher ? &s.member->plan->forced[k]
                                              : &s.member->plan->delayed[k];
    int64_t fused_ns = 0;
    for (; q < positions && ready(st.delay_y, st.delay_x, q / w_, q % w_) <= t; ++q) {
      if (sp != nullptr) {
        fused_ns += run_split(s, k, *sp, q / w_, q % w_, nullptr, -1, ns);
      } else {
        run_step(s, st, q / w_, q % w_);
        if (!epilogue_[k].empty()) fused_ns += run_epilogue(s, k, q / w_, q % w_, -1, ns);
      }
    }
    if (ns != nullptr) ns[k] += now_ns() - t0 - fused_ns;
  }
}

// One position's GEMM A rows for the slice's images: plan piece (oy, ox, [c0, c1)) reads input buffer `in` at
// (bi + oy, bj + ox) on the input's grid, zeros outside it (a shift or a pad reads past the border). The ring holds
// the images' pixels at one stride (W x C), so pieces whose sources are adjacent in image 0's ring (taps along a row
// reading every channel) and whose columns are adjacent form one run for every image. Inside the input, the GEMM
// reads the runs where they are (no copy): a column range becomes the ring offsets of the runs it covers, in
// column order (the microkernels sum each output over k in range order, so the sums are the gathered block's). A
// narrow (`dot`) segment vectorises along each range: it reads in place only when no range splits.
detail::ARows ColumnProgram::gather_columns(Slice& s, const detail::GatherPlan& pl, int in, int out, int written,
                                            int64_t bi, int64_t bj) const {
  const Grid& gi = grid(in);
  const int64_t img_stride = buffer_w_[in] * buffer_channels_[in];  // s.px's distance between images
  const int64_t cin = buffer_channels_[in];
  Slice::GatherRun* runs = s.runs.data();
  int nruns = 0;
  bool inside = true;
  int64_t row_i = -1;  // the source row whose ring row row_base is (taps come row by row: one slot computed per row)
  const float* row_base = nullptr;
  for (const auto& pc : pl.pieces) {
    const int64_t si = bi + pc.oy, sj = bj + pc.ox, len = pc.c1 - pc.c0;
    const bool in_image = si >= 0 && si < gi.ny && sj >= 0 && sj < gi.nx;
    if (in_image && si != row_i) {
      row_i = si;
      row_base = s.px(*this, in, si, 0, 0);
    }
    const float* src = in_image ? row_base + sj * cin + pc.c0 : nullptr;
    inside = inside && src != nullptr;
    Slice::GatherRun* last = nruns > 0 ? &runs[nruns - 1] : nullptr;
    if (last != nullptr && last->col + last->len == pc.col &&
        (src == nullptr ? last->src == nullptr : last->src != nullptr && last->src + last->len == src))
      last->len += len;
    else
      runs[nruns++] = {src, pc.col, len};
  }
  if (gather_in_place_ && inside && nruns > 0 && in != out && in != written) {
    const float* base = runs[0].src;
    KRange* kr = s.kranges.data();
    bool ok = true;
    for (size_t g = 0; g < pl.segs.size() && ok; ++g) {
      const detail::Segment& seg = pl.segs[g];
      s.seg_ranges[g] = kr;
      int count = 0;
      for (const KRange& cr : seg.ranges) {
        for (int r = 0; r < nruns; ++r) {  // the runs the column range covers, in column order
          const int64_t b = std::max(cr.begin, runs[r].col), e = std::min(cr.end, runs[r].col + runs[r].len);
          if (b >= e) continue;
          const int64_t off = (runs[r].src - base) + (b - runs[r].col);
          if (count > 0 && !seg.dot && kr[count - 1].end == off)
            kr[count - 1].end = off + (e - b);  // adjacent in the ring too
          else
            kr[count++] = {off, off + (e - b)};
        }
      }
      ok = !seg.dot || count == static_cast<int>(seg.ranges.size());
      s.seg_nranges[g] = count;
      kr += count;
    }
    if (ok) return {base, img_stride, s.seg_ranges.data(), s.seg_nranges.data()};
  }
  float* col = s.col.data();
  for (int64_t img = 0; img < s.nb; ++img) {
    float* row = col + img * pl.kcol;
    for (int r = 0; r < nruns; ++r) {
      const Slice::GatherRun& run = runs[r];
      if (run.src == nullptr)
        std::memset(row + run.col, 0, run.len * sizeof(float));
      else if (run.len == 1)
        row[run.col] = run.src[img * img_stride];  // one-channel input (a first layer)
      else
        std::memcpy(row + run.col, run.src + img * img_stride, run.len * sizeof(float));
    }
  }
  return {col, pl.kcol};
}

// Grids (docs/SEMANTICS.md, "Grids"; the scheduling is column_program_grids.cc): at raster step t each scheduled
// step computes, in program order, its positions whose ready step has come.
void ColumnProgram::run_scheduled(Slice& s, int64_t t, int64_t* ns) const {
  for (size_t m = 0; m < delayed_.size(); ++m) {
    const ProgramStep& st = steps_[delayed_[m]];
    int64_t& q = s.next[m];  // the step's next position in its order
    const int64_t n = static_cast<int64_t>(st.order.size()), nx = grid(st.out).nx;
    if (fused_into_[delayed_[m]] >= 0) continue;  // computed by its conv's epilogue, at the same positions
    const int64_t t0 = ns != nullptr ? now_ns() : 0;
    int64_t fused_ns = 0;
    for (; q < n && st.ready_at[st.order[q]] <= t; ++q) {
      run_grid_step(s, st, st.order[q] / nx, st.order[q] % nx);
      if (!epilogue_[delayed_[m]].empty())
        fused_ns += run_epilogue(s, delayed_[m], st.order[q] / nx, st.order[q] % nx, -1, ns);
    }
    if (ns != nullptr) ns[delayed_[m]] += now_ns() - t0 - fused_ns;
  }
}

// One position (i, j) of a scheduled step's grid. Convs and shifts read their input's grid (a strided conv at
// (sy i, sx j), a transposed conv its phase's taps at (i div sy, j div sx)); the other kinds are per position.
void ColumnProgram::run_grid_step(Slice& s, const ProgramStep& st, int64_t i, int64_t j) const {
  const Grid& go = grid(st.out);
  const bool image = go == image_grid_ && (st.ins.empty() || grid(st.ins[0]) == image_grid_);
  if (st.kind != StepKind::kConv || (image && !grids::is_grid_conv(st))) {
    run_step(s, st, i, j);  // per position of its grid (a shift reads its input's grid)
    return;
  }
  const detail::GatherPlan* pl = &st.plan;
  int64_t bi = st.sy * i, bj = st.sx * j;
  if (st.transpose) {
    pl = &st.phase_plans[grids::pos_mod(i, st.sy) * st.sx + grids::pos_mod(j, st.sx)];
    bi = grids::floor_div(i, st.sy);
    bj = grids::floor_div(j, st.sx);
  }
  const detail::ARows a = gather_columns(s, *pl, st.ins[0], st.out, st.out, bi, bj);
  // Its ring cache, or the epilogue scratch when only its fused epilogue reads it (plan_epilogues).
  const int64_t scratch_at = conv_scratch_[&st - steps_.data()];
  if (scratch_at >= 0)
    detail::gemm_segments(active_kernels(), *pl, a, s.nb, s.scratch.data() + scratch_at, scratch_floats_);
  else
    detail::gemm_segments(active_kernels(), *pl, a, s.nb, s.px(*this, st.out, i, 0, j),
                          go.nx * buffer_channels_[st.out]);
}

// docs/SAMPLER.md, "Fused epilogues". A conv's epilogue is every later elementwise step (act, binary, concat,
// gather) that reads a buffer the epilogue computes at its own position, computed on the same schedule as the
// conv (same delay, run in the same colour passes), whose other operands are ready when the conv runs (the
// image or constants, a buffer written earlier in program order, or one written by a delayed step when the conv
// is a colour-pass step and vice versa, which run_delayed / the colour passes order before it) and whose output
// has no other writer. Its ops then run in program order on the rows the GEMM just wrote, so every value is
// the one the unfused steps compute; a contiguous gather read only inside the epilogue (a gate's split) is
// read in place, never copied. Every other buffer an op writes stays in its ring cache (one row for a buffer
// only the epilogue reads, in L1 at this pixel): later steps and the draws read them as before. On grids the
// same schedule is also the same grid and the same ready step at every position (same_grid_schedule): the
// epilogue runs where run_scheduled computes the conv's position, after the steps before it in program order.
void ColumnProgram::plan_epilogues() const {
  const int n = static_cast<int>(steps_.size()), nbuf = static_cast<int>(buffer_channels_.size());
  fused_into_.assign(n, -1);
  epilogue_.assign(n, {});
  gemm_fusion_.assign(n, {});
  conv_scratch_.assign(n, -1);
  ring_elided_.assign(nbuf, 0);
  scratch_floats_ = 0;
  if (!fuse_epilogues_) return;
  struct GroupScratch {
    int conv;
    bool shareable;
    int64_t floats, conv_offset;
  };
  std::vector<GroupScratch> groups;
  std::vector<int> writers(nbuf, 0), producer(nbuf, -1);
  std::vector<std::vector<int>> readers(nbuf);
  for (int k = 0; k < n; ++k) {
    if (writers[steps_[k].out]++ == 0) producer[steps_[k].out] = k;
    for (const Operand& o : steps_[k].operands)
      if (!o.is_const) readers[o.index].push_back(k);
  }
  auto same_schedule = [&](int a, int b) {
    if (steps_[a].delay_y != steps_[b].delay_y || steps_[a].delay_x != steps_[b].delay_x) return false;
    if (on_grids() && !same_grid_schedule(steps_[a], steps_[b])) return false;  // column_program_grids.cc
    for (int p = 0; p <= c_; ++p)
      if (pass_parts_[a][p].run != pass_parts_[b][p].run) return false;
    return true;
  };
  for (int k = 0; k < n; ++k) {
    const ProgramStep& conv = steps_[k];
    if (conv.kind != StepKind::kConv || writers[conv.out] != 1) continue;
    auto ready_before = [&](int b) {  // b's value at this position is computed before the conv runs
      if (b == 0) return true;         // the image: drawn before the pass that reads it
      if (writers[b] != 1) return false;
      return producer[b] < k || steps_[producer[b]].delayed() != conv.delayed();
    };
    std::vector<char> in_group(nbuf, 0), member(n, 0);
    in_group[conv.out] = 1;
    std::vector<int> members;
    int rows_used = 0;
    for (int s = k + 1; s < n; ++s) {
      const ProgramStep& st = steps_[s];
      const bool elementwise = st.kind == StepKind::kAct || st.kind == StepKind::kBinary ||
                               st.kind == StepKind::kGather || st.kind == StepKind::kConcat;
      if (!elementwise || fused_into_[s] >= 0 || writers[st.out] != 1 || !same_schedule(s, k)) continue;
      bool reads_group = false, ready = true;
      for (const Operand& o : st.operands) {
        if (o.is_const) continue;
        if (in_group[o.index])
          reads_group = true;
        else
          ready = ready && ready_before(o.index);
      }
      if (!reads_group || !ready) continue;
      // run_epilogue binds every op's rows on the stack: a longer chain continues as steps of its own.
      if (static_cast<int>(members.size()) + 1 > kMaxEpilogueOps ||
          rows_used + static_cast<int>(st.operands.size()) > kMaxEpilogueRows)
        break;
      rows_used += static_cast<int>(st.operands.size());
      in_group[st.out] = 1;
      member[s] = 1;
      members.push_back(s);
    }
    if (members.empty()) continue;
    // A buffer only this epilogue reads (not the head) lives in the slice's scratch, not in its ring cache: the
    // same few lines at every position, so its stores and loads hit L1 / L2 instead of a new ring pixel.
    auto internal = [&](int b) {
      if (b == 0 || b == head_.buffer) return false;
      for (int r : readers[b])
        if (!member[r]) return false;
      return true;
    };
    // Scratch is shared by the epilogues whose steps run whole in every colour pass they run in: their values
    // are dead once the epilogue ends. One that computes a channel range per pass reads channels an earlier pass
    // wrote at this position, so it gets a region of its own.
    bool shareable = true;
    for (int p = 0; p <= c_; ++p) {
      shareable = shareable && (!pass_parts_[k][p].run || pass_parts_[k][p].whole);
      for (int m : members) shareable = shareable && (!pass_parts_[m][p].run || pass_parts_[m][p].whole);
    }
    int64_t floats = 0;  // this epilogue's scratch per image
    auto place = [&](int b) {
      if (!internal(b)) return FusedLoc{Where::kRing, b, 0, buffer_channels_[b]};
      ring_elided_[b] = 1;
      floats += buffer_channels_[b];
      return FusedLoc{Where::kScratch, b, floats - buffer_channels_[b], buffer_channels_[b]};
    };
    std::vector<FusedLoc> loc(nbuf);  // where each buffer of the group is read from
    auto operand_loc = [&](const Operand& o) {
      if (o.is_const) return FusedLoc{Where::kConst, o.index, 0, consts_[o.index].c};
      if (in_group[o.index]) return loc[o.index];
      return FusedLoc{Where::kRing, o.index, 0, buffer_channels_[o.index]};
    };
    loc[conv.out] = place(conv.out);
    for (int s : members) {
      const ProgramStep& st = steps_[s];
      fused_into_[s] = k;
      bool in_place = st.kind == StepKind::kGather && st.out != head_.buffer;
      for (size_t c = 0; c < st.channels.size() && in_place; ++c) in_place = st.channels[c] == st.channels[0] + int32_t(c);
      for (int r : readers[st.out]) in_place = in_place && member[r];
      if (in_place) {  // a split: its readers read the source's channel range
        FusedLoc l = operand_loc(st.operands[0]);
        l.offset += st.channels[0];
        l.channels = buffer_channels_[st.out];
        loc[st.out] = l;
        ring_elided_[st.out] = 1;
        continue;
      }
      FusedOp op;
      op.step = s;
      for (const Operand& o : st.operands) op.in.push_back(operand_loc(o));
      op.out = loc[st.out] = place(st.out);
      epilogue_[k].push_back(std::move(op));
    }
    groups.push_back({k, shareable, floats, loc[conv.out].where == Where::kScratch ? loc[conv.out].offset : -1});
  }
  // Scratch regions: the shareable epilogues from float 0, each other one after them in a region of its own.
  int64_t shared = 0, own = 0;
  for (const GroupScratch& g : groups)
    if (g.shareable) shared = std::max(shared, g.floats);
  for (const GroupScratch& g : groups) {
    const int64_t base = g.shareable ? 0 : shared + own;
    if (!g.shareable) own += g.floats;
    for (FusedOp& op : epilogue_[g.conv]) {
      if (op.out.where == Where::kScratch) op.out.offset += base;
      for (FusedLoc& l : op.in)
        if (l.where == Where::kScratch) l.offset += base;
    }
    if (g.conv_offset >= 0) conv_scratch_[g.conv] = base + g.conv_offset;
  }
  scratch_floats_ = shared + own;
  for (const GroupScratch& g : groups) plan_gemm_fusion(g.conv, readers);
}

// The leading bias add (then an activation, then a residual add) of conv k's epilogue move into its GEMM's store
// (GemmEpilogue) when the GEMM computes exactly the values the ops would: the conv runs whole in every colour pass
// it runs in (so do the ops), off grids, with no narrow segment (gemm_dot has no epilogue); the bias add reads the
// conv's output, which nothing else reads, and a constant row, one value per channel shared by every image and
// position; the activation (not erf, which is libm's) reads the bias add's output, the residual add the last
// one's and a whole ring buffer, each intermediate read by nothing else. In split mode a thread's op ranges are
// its GEMM windows' channels (column_split.cc: each op reads the channel it writes), so the windows compute them.
void ColumnProgram::plan_gemm_fusion(int k, const std::vector<std::vector<int>>& readers) const {
  const ProgramStep& conv = steps_[k];
  const std::vector<FusedOp>& ops = epilogue_[k];
  if (on_grids() || ops.empty() || conv_scratch_[k] < 0) return;
  for (const detail::Segment& g : conv.plan.segs)
    if (g.dot) return;
  for (int p = 0; p <= c_; ++p)
    if (pass_parts_[k][p].run && !pass_parts_[k][p].whole) return;
  const int64_t cout = buffer_channels_[conv.out];
  auto only_reader = [&](int b, int step) { return readers[b].size() == 1 && readers[b][0] == step; };
  auto is_buffer = [&](const FusedLoc& l, int b, int64_t offset) {  // all of buffer b, at scratch float `offset`
    return l.where == Where::kScratch && l.index == b && l.offset == offset && l.channels == cout;
  };
  const FusedOp& add = ops[0];
  const ProgramStep& sa = steps_[add.step];
  if (sa.kind != StepKind::kBinary || sa.binary != BinaryFn::kAdd || !only_reader(conv.out, add.step)) return;
  GemmFusion f;
  for (int q = 0; q < 2; ++q) {
    const FusedLoc &l = add.in[q], &other = add.in[1 - q];
    if (l.where != Where::kConst || l.offset != 0 || !is_buffer(other, conv.out, conv_scratch_[k])) continue;
    const ConstTensor& t = consts_[l.index];
    if (t.n == 1 && t.h == 1 && t.w == 1 && t.c == cout) f.bias = l.index;  // x + b and b + x: the same float sum
  }
  if (f.bias < 0) return;
  f.ops = 1;
  f.out = add.out;
  if (ops.size() > 1 && add.out.where == Where::kScratch && only_reader(sa.out, ops[1].step)) {
    const ProgramStep& sb = steps_[ops[1].step];
    if (sb.kind == StepKind::kAct && sb.act != ActFn::kErf && is_buffer(ops[1].in[0], sa.out, add.out.offset)) {
      f.ops = 2;
      f.act = static_cast<int32_t>(sb.act);
      f.alpha = sb.alpha;
      f.out = ops[1].out;
    }
  }
  // A residual add of the last one's output (which nothing else reads) and a whole ring buffer of as many channels.
  const size_t next = static_cast<size_t>(f.ops);
  const int last_out = steps_[ops[next - 1].step].out;
  if (ops.size() > next && f.out.where == Where::kScratch && only_reader(last_out, ops[next].step)) {
    const ProgramStep& sr = steps_[ops[next].step];
    for (int q = 0; q < 2 && sr.kind == StepKind::kBinary && sr.binary == BinaryFn::kAdd; ++q) {
      const FusedLoc &l = ops[next].in[q], &other = ops[next].in[1 - q];
      if (l.where != Where::kRing || l.offset != 0 || l.channels != cout || l.index == sr.out ||
          !is_buffer(other, last_out, f.out.offset))
        continue;
      f.ops += 1;
      f.add = l.index;
      f.add_first = q == 0;
      f.out = ops[next].out;
      break;
    }
  }
  gemm_fusion_[k] = f;
}

const float* ColumnProgram::fused_rows(Slice& s, const FusedLoc& l, int64_t i, int64_t j, int64_t* step) const {
  switch (l.where) {
    case Where::kRing:
      *step = buffer_w_[l.index] * buffer_channels_[l.index];
      return s.px(*this, l.index, i, 0, j) + l.offset;
    case Where::kScratch:
      *step = scratch_floats_;
      return s.scratch.data() + l.offset;
    default: {
      const ConstTensor& t = consts_[l.index];
      *step = t.n > 1 ? t.h * t.w * t.c : 0;
      return t.pixel(s.img0, i, j) + l.offset;
    }
  }
}

int64_t ColumnProgram::run_epilogue(Slice& s, int k, int64_t i, int64_t j, int p, int64_t* ns,
                                    const Share* share) const {
  const Kernels& kern = active_kernels();
  const std::vector<FusedOp>& ops = epilogue_[k];
  // Each op's output and operand rows at this position, bound once for all images: image img's values are at
  // base + img * step (the ring's image stride; a constant's per-image stride or 0).
  struct Rows {
    const float* base;
    int64_t step;
  };
  struct Bound {
    bool run;
    int64_t lo, hi;  // the channels this pass computes (as run_pass gives the unfused step)
    float* y;
    int64_t ystep;
    int first;  // its operands' rows
  };
  Rows rows[kMaxEpilogueRows];
  Bound bound[kMaxEpilogueOps];
  auto bind = [&](const FusedLoc& l) -> Rows {
    Rows r;
    r.base = fused_rows(s, l, i, j, &r.step);
    return r;
  };
  const size_t first = static_cast<size_t>(gemm_fusion_[k].ops);  // the ops before it ran in the conv's GEMM
  int nrows = 0;
  for (size_t o = first; o < ops.size(); ++o) {
    const ProgramStep& st = steps_[ops[o].step];
    Bound& b = bound[o];
    const Rows y = bind(ops[o].out);  // a ring or scratch row: writable
    b = {true, 0, buffer_channels_[st.out], const_cast<float*>(y.base), y.step, nrows};
    if (p >= 0) {
      const PassPart& part = pass_parts_[ops[o].step][p];
      b.run = part.run;
      if (!part.whole) b.lo = part.lo, b.hi = part.hi;
    }
    for (const FusedLoc& l : ops[o].in) rows[nrows++] = bind(l);
  }
  // Output channels [lo, hi) of op o for every image of the slice: one vectorised call over the images' rows (their
  // strides as bound), each row's values those of a call for that image alone.
  auto apply_range = [&](size_t o, int64_t lo, int64_t hi) {
    const Bound& b = bound[o];
    const FusedOp& op = ops[o];
    const ProgramStep& st = steps_[op.step];
    const Rows* in = rows + b.first;
    const int64_t len = hi - lo, nb = s.nb;
    switch (st.kind) {
      case StepKind::kAct:
        kern.act_rows(static_cast<int32_t>(st.act), st.alpha, in[0].base + lo, in[0].step, b.y + lo, b.ystep, len, nb);
        break;
      case StepKind::kBinary: {
        const int64_t as = op.in[0].channels > 1 ? 1 : 0, bs = op.in[1].channels > 1 ? 1 : 0;
        kern.binary_rows({static_cast<int32_t>(st.binary), in[0].base + lo * as, as, in[0].step, in[1].base + lo * bs,
                          bs, in[1].step, b.y + lo, b.ystep, len, nb});
        break;
      }
      case StepKind::kGather:
        for (int64_t img = 0; img < nb; ++img) {
          const float* a = in[0].base + img * in[0].step;
          float* y = b.y + img * b.ystep;
          for (int64_t ch = lo; ch < hi; ++ch) y[ch] = a[st.channels[ch]];
        }
        break;
      default:  // kConcat: each operand's piece of [lo, hi)
        for (int64_t img = 0; img < nb; ++img) {
          float* y = b.y + img * b.ystep;
          int64_t off = 0;
          for (size_t q = 0; q < op.in.size(); ++q) {
            const int64_t c0 = std::max(lo, off), c1 = std::min(hi, off + op.in[q].channels);
            if (c0 < c1) std::memcpy(y + c0, in[q].base + img * in[q].step + (c0 - off), (c1 - c0) * sizeof(float));
            off += op.in[q].channels;
          }
        }
        break;
    }
  };
  // Op by op in program order, each over every image (an op reads only what the GEMM or earlier ops wrote): one
  // call per op instead of one per op and image; a thread's images' rows of one op are a few KB, in L1.
  int64_t total = 0;
  for (size_t o = first; o < ops.size(); ++o) {
    const Bound& b = bound[o];
    if (!b.run) continue;
    const int64_t t0 = ns != nullptr ? now_ns() : 0;
    if (share == nullptr) {
      apply_range(o, b.lo, b.hi);
    } else {
      for (const auto& [lo, hi] : share->fused[o]) {  // split mode: this member's ranges within the pass's
        const int64_t c0 = std::max(lo, b.lo), c1 = std::min(hi, b.hi);
        if (c0 < c1) apply_range(o, c0, c1);
      }
    }
    if (ns != nullptr) {  // profiling: each op's time to its own step
      const int64_t dt = now_ns() - t0;
      ns[ops[o].step] += dt;
      total += dt;
    }
  }
  return total;
}

int64_t ColumnProgram::first_step() const {
  int64_t t = 0;
  for (int k : delayed_) t = std::min(t, ready(steps_[k].delay_y, steps_[k].delay_x, 0, 0));
  return t;
}

inline const float* ColumnProgram::operand_pixel(Slice& s, const Operand& o, int64_t i, int64_t img,
                                                 int64_t j) const {
  return o.is_const ? consts_[o.index].pixel(s.img0 + img, i, j) : s.px(*this, o.index, i, img, j);
}

// A conv with a carry at (i, j): its prefix sums at j hold the rows above and its left tap (added at j - 1; at j = 0,
// where the left tap reads zeros outside the image, added here first), so its GEMM goes on over the centre only; the
// left tap of j + 1 reads this position's input pixel, which the centre reads: its products go into j + 1's prefix
// sums, in split mode interleaved with the centre's in one tile loop (Kernels::gemm_pair; the group's single image).
void ColumnProgram::run_carry_conv(Slice& s, const ProgramStep& st, const RowPrefix& rp, int64_t i, int64_t j,
                                   float* out, int64_t ldd, const GemmEpilogue* e, int written,
                                   const std::vector<std::shared_ptr<const detail::PackedWindow>>* windows) const {
  const Kernels& kern = active_kernels();
  const detail::GatherPlan& pl = st.plan;
  const int in = st.ins[0];
  const int64_t nb = s.nb, width = buffer_channels_[st.out], ldpre = w_ * width;
  const int64_t kl = rp.cols, kc = rp.cols + rp.carry;  // the left tap's k positions, then the centre's
  float* pre = s.pre + nb * rp.offset + j * width;
  const KRange whole{0, rp.carry};
  const KRange* one_range[kMaxCarrySegments];
  int one_count[kMaxCarrySegments];
  for (size_t g = 0; g < pl.segs.size(); ++g) {
    one_range[g] = &whole;
    one_count[g] = 1;
  }
  if (j == 0) {  // the left tap outside the image: zeros, summed as a gathered block would be
    float* zeros = s.col.data();
    std::memset(zeros, 0, rp.carry * sizeof(float));
    const detail::ARows za{zeros, 0, one_range, one_count};
    const detail::KPart left{kl, kc, pre, ldpre, true};
    if (windows != nullptr) {
      for (const auto& w : *windows) detail::gemm_packed_window(kern, pl, *w, za, nb, pre, ldpre, nullptr, &left);
    } else {
      for (const detail::Segment& seg : pl.segs)
        detail::gemm_segment(kern, pl, seg, za, nb, pre, ldpre, nullptr, &left);
    }
  }
  const float* pixel = s.px(*this, in, i, 0, j) + rp.carry_c0;  // the centre's input: the next position's left tap
  const int64_t img_stride = buffer_w_[in] * buffer_channels_[in];
  const bool next = j + 1 < w_;
  if (windows != nullptr && next) {
    for (const auto& w : *windows)
      detail::gemm_packed_window_pair(kern, pl, *w, pixel, img_stride, nb, &whole, 1, kc, kl, pre, ldpre, out, ldd, e,
                                      pre + width, ldpre, pre + width, ldpre);
    return;
  }
  const detail::ARows col = gather_columns(s, pl, in, st.out, written, i, j);
  const detail::KPart centre{kc, -1, pre, ldpre};
  if (windows != nullptr) {
    for (const auto& w : *windows) detail::gemm_packed_window(kern, pl, *w, col, nb, out, ldd, e, &centre);
  } else {
    for (const detail::Segment& seg : pl.segs) detail::gemm_segment(kern, pl, seg, col, nb, out, ldd, e, &centre);
  }
  if (!next) return;
  const detail::ARows pa{pixel, img_stride, one_range, one_count};
  const detail::KPart left{kl, kc, pre + width, ldpre, true};
  for (const detail::Segment& seg : pl.segs)
    detail::gemm_segment(kern, pl, seg, pa, nb, pre + width, ldpre, nullptr, &left);
}

void ColumnProgram::run_step(Slice& s, const ProgramStep& st, int64_t i, int64_t j, const PassPart* part,
                             const std::vector<std::shared_ptr<const detail::PackedWindow>>* windows) const {
  const Kernels& kern = active_kernels();
  const int64_t nb = s.nb;
  // Elementwise kinds compute output channels [c0, c0 + cout) (part: one colour pass's channels).
  const int64_t c0 = part != nullptr ? part->lo : 0;
  {
    const int64_t cout = part != nullptr ? part->hi - part->lo : buffer_channels_[st.out];
    switch (st.kind) {
      case StepKind::kConv: {
        const detail::GatherPlan& pl = st.plan;

        // The images' rows of the output: its ring cache, or the epilogue scratch when only the conv's fused
        // epilogue reads it (plan_epilogues); with a bias (+ activation) in the GEMM (plan_gemm_fusion), the last
        // such op's output.
        const int k = static_cast<int>(&st - steps_.data());
        const int64_t scratch_at = conv_scratch_[k];
        float* out = scratch_at >= 0 ? s.scratch.data() + scratch_at : s.px(*this, st.out, i, 0, j);
        int64_t ldd = scratch_at >= 0 ? scratch_floats_ : w_ * buffer_channels_[st.out];
        const GemmFusion& gf = gemm_fusion_[k];
        GemmEpilogue epi;
        if (gf.ops > 0) {
          out = const_cast<float*>(fused_rows(s, gf.out, i, j, &ldd));  // a ring or scratch row: writable
          epi.bias = consts_[gf.bias].data.data();
          epi.act = gf.act;
          epi.alpha = gf.alpha;
          if (gf.add >= 0) {
            epi.add = s.px(*this, gf.add, i, 0, j);
            epi.ldadd = buffer_w_[gf.add] * buffer_channels_[gf.add];
            epi.add_first = gf.add_first;
          }
        }
        const GemmEpilogue* e = gf.ops > 0 ? &epi : nullptr;
        const int written = gf.ops > 0 && gf.out.where == Where::kRing ? gf.out.index : st.out;
        const RowPrefix& rp = row_prefix_[k];
        const int64_t width = buffer_channels_[st.out];
        // Slice::split_group, or images few enough that their tiles are 1-3 rows tall: chains, not throughput.
        const bool prefixed = rp.on && (!rp.chains_only || s.split_group || s.nb < kChainRows);
        if (prefixed && j == 0) row_prefix(s, st, rp, i, part, windows);  // the row's sums over the rows above
        if (prefixed && rp.carry > 0 && s.split_group) {
          run_carry_conv(s, st, rp, i, j, out, ldd, e, written, windows);
          break;
        }
        const detail::ARows col = gather_columns(s, pl, st.ins[0], st.out, written, i, j);
        // With a row prefix (row_prefix summed its leading k at the row's first position), each segment's GEMM goes on
        // from those sums over the rest of its k.
        auto rest = [&](int g, detail::KPart* kp) -> const detail::KPart* {
          if (!prefixed || rp.k_pre[g] == 0) return nullptr;
          *kp = {rp.k_pre[g], -1, s.pre + nb * rp.offset + j * width, w_ * width};
          return kp;
        };
        detail::KPart kp;
        if (windows != nullptr) {  // split mode: this thread's column windows (of the pass's segments)
          for (const auto& w : *windows)
            detail::gemm_packed_window(kern, pl, *w, col, nb, out, ldd, e, rest(w->seg, &kp));
        } else if (part == nullptr) {
          for (size_t g = 0; g < pl.segs.size(); ++g)
            detail::gemm_segment(kern, pl, pl.segs[g], col, nb, out, ldd, e, rest(static_cast<int>(g), &kp));
        } else {
          for (int g : part->segs) detail::gemm_segment(kern, pl, pl.segs[g], col, nb, out, ldd, e, rest(g, &kp));
        }
        break;
      }
      case StepKind::kBinary: {
        // (a, b): each a buffer or a constant at this pixel; a 1-channel one is broadcast (stride 0). One call over
        // the images' rows: a ring's at its image stride, a constant's per-image rows or its one shared row.
        const Operand &oa = st.operands[0], &ob = st.operands[1];
        const int64_t astride = operand_channels(oa) > 1 ? 1 : 0, bstride = operand_channels(ob) > 1 ? 1 : 0;
        auto rows_of = [&](const Operand& o, int64_t* row) -> const float* {
          if (!o.is_const) {
            *row = buffer_w_[o.index] * buffer_channels_[o.index];
            return s.px(*this, o.index, i, 0, j);
          }
          const ConstTensor& t = consts_[o.index];
          *row = t.n > 1 ? t.h * t.w * t.c : 0;
          return t.pixel(s.img0, i, j);
        };
        int64_t arow = 0, brow = 0;
        const float* a = rows_of(oa, &arow);
        const float* b = rows_of(ob, &brow);
        kern.binary_rows({static_cast<int32_t>(st.binary), a + c0 * astride, astride, arow, b + c0 * bstride, bstride,
                          brow, s.px(*this, st.out, i, 0, j) + c0, buffer_w_[st.out] * buffer_channels_[st.out], cout,
                          nb});
        break;
      }
      case StepKind::kAct:
        kern.act_rows(static_cast<int32_t>(st.act), st.alpha, s.px(*this, st.ins[0], i, 0, j) + c0,
                      buffer_w_[st.ins[0]] * buffer_channels_[st.ins[0]], s.px(*this, st.out, i, 0, j) + c0,
                      buffer_w_[st.out] * buffer_channels_[st.out], cout, nb);
        break;
      case StepKind::kConcat:
        for (int64_t img = 0; img < nb; ++img) {
          float* y = s.px(*this, st.out, i, img, j);
          for (const Operand& o : st.operands) {
            const int64_t len = operand_channels(o);
            std::memcpy(y, operand_pixel(s, o, i, img, j), len * sizeof(float));
            y += len;
          }
        }
        break;
      case StepKind::kGather:
        for (int64_t img = 0; img < nb; ++img) {
          const float* a = s.px(*this, st.ins[0], i, img, j);
          float* y = s.px(*this, st.out, i, img, j);
          for (int64_t ch = c0; ch < c0 + cout; ++ch) y[ch] = a[st.channels[ch]];
        }
        break;
      case StepKind::kSoftmax:
        for (int64_t img = 0; img < nb; ++img) {
          const float* a = s.px(*this, st.ins[0], i, img, j);
          float* y = s.px(*this, st.out, i, img, j);
          for (int64_t g0 = 0; g0 < cout; g0 += st.group) {
            float m = a[g0];
            for (int k = 1; k < st.group; ++k) m = std::max(m, a[g0 + k]);
            float sum = 0.0f;
            for (int k = 0; k < st.group; ++k) sum += std::exp(a[g0 + k] - m);
            for (int k = 0; k < st.group; ++k)
              y[g0 + k] = st.log ? a[g0 + k] - m - std::log(sum) : std::exp(a[g0 + k] - m) / sum;
          }
        }
        break;
      case StepKind::kShift: {  // on the input's grid (the image's, or a coarse one in a program on grids)
        const Grid& gi = grid(st.ins[0]);
        const int64_t si = i + st.dy, sj = j + st.dx, len = buffer_channels_[st.out];
        const bool inside = si >= 0 && si < gi.ny && sj >= 0 && sj < gi.nx;
        for (int64_t img = 0; img < nb; ++img) {
          float* y = s.px(*this, st.out, i, img, j);
          if (inside)
            std::memcpy(y, s.px(*this, st.ins[0], si, img, sj), len * sizeof(float));
          else
            std::memset(y, 0, len * sizeof(float));
        }
        break;
      }
      case StepKind::kReduce:
        for (int64_t img = 0; img < nb; ++img) {
          const float* a = s.px(*this, st.ins[0], i, img, j);
          const int64_t cin = buffer_channels_[st.ins[0]];
          float r = a[0];
          for (int64_t ch = 1; ch < cin; ++ch) {
            switch (st.reduce) {
              case ReduceFn::kSum:
              case ReduceFn::kMean: r += a[ch]; break;
              case ReduceFn::kMax: r = std::max(r, a[ch]); break;
              case ReduceFn::kMin: r = std::min(r, a[ch]); break;
            }
          }
          if (st.reduce == ReduceFn::kMean) r /= static_cast<float>(cin);
          *s.px(*this, st.out, i, img, j) = r;
        }
        break;
    }
  }
}

#ifdef PCF_SANITIZER_SEEDED_BUG
// Test-only (tests/sanitizers/asan_build.py --seeded-bug): every ring cache one float short, an off-by-one the
// sanitizer job must catch. Never defined by setup.py.
constexpr int64_t kSeededBugFloats = 1;
#else
constexpr int64_t kSeededBugFloats = 0;
#endif

std::vector<float> ColumnProgram::RingPool::take(int64_t size, float value) {
  std::vector<float> v;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t k = 0; k < free.size(); ++k)
      if (static_cast<int64_t>(free[k].size()) == size) {
        v = std::move(free[k]);
        free.erase(free.begin() + static_cast<std::ptrdiff_t>(k));
        floats -= size;
        break;
      }
  }
  if (v.empty())
    v.assign(size, value);
  else
    std::fill(v.begin(), v.end(), value);
  return v;
}

void ColumnProgram::RingPool::give_back(std::vector<std::vector<float>>& storage) {
  std::lock_guard<std::mutex> lock(mutex);
  for (std::vector<float>& v : storage) {
    const int64_t size = static_cast<int64_t>(v.size());
    if (size == 0 || floats + size > kMaxFloats) continue;
    floats += size;
    free.push_back(std::move(v));
  }
}

ColumnProgram::Slice ColumnProgram::make_slice(int64_t b0, int64_t b1, const Slice* rings) const {
  Slice s;
  s.img0 = b0;
  s.nb = b1 - b0;
  if (rings != nullptr) {
    s.ring = rings->ring;
    s.pre = rings->pre;
  } else {
    s.pool = ring_pool_;
    s.storage.resize(buffer_channels_.size());
    s.ring.assign(buffer_channels_.size(), nullptr);
    for (size_t b = 0; b < buffer_channels_.size(); ++b) {  // none for a buffer only fused epilogues read
      if (ring_elided_[b]) continue;
      s.storage[b] = ring_pool_->take(ring_rows_[b] * s.nb * buffer_w_[b] * buffer_channels_[b] - kSeededBugFloats,
                                      poison_caches_ ? NAN : 0.0f);
      s.ring[b] = s.storage[b].data();
    }
    if (prefix_floats_ > 0) {  // row prefixes: storage's last vector
      s.storage.push_back(ring_pool_->take(s.nb * prefix_floats_, poison_caches_ ? NAN : 0.0f));
      s.pre = s.storage.back().data();
    }
  }
  int64_t kmax = 0;
  size_t pieces = 0, segs = 0, kranges = 0;
  auto fit = [&](const detail::GatherPlan& pl) {
    kmax = std::max(kmax, pl.kcol);
    pieces = std::max(pieces, pl.pieces.size());
    segs = std::max(segs, pl.segs.size());
    size_t k = 0;  // a column range splits at most once per run (piece) inside it
    for (const detail::Segment& g : pl.segs) k += g.ranges.size() + pl.pieces.size();
    kranges = std::max(kranges, k);
  };
  for (const ProgramStep& st : steps_) {
    if (st.kind != StepKind::kConv) continue;
    fit(st.plan);
    for (const detail::GatherPlan& pl : st.phase_plans) fit(pl);  // a transposed conv's phases
  }
  s.col.assign(s.nb * kmax + 16, 0.0f);  // one position's im2col rows for the slice's images
  s.runs.resize(pieces);
  s.kranges.resize(kranges);
  s.seg_ranges.resize(segs);
  s.seg_nranges.resize(segs);
  s.next.assign(delayed_.size(), 0);
  s.scratch.assign(s.nb * scratch_floats_, poison_caches_ ? NAN : 0.0f);
  return s;
}

void ColumnProgram::teacher_forced(const float* image, int64_t n, float* head_out, const Parallel& par) const {
  if (head_.buffer < 0) throw std::invalid_argument("teacher_forced: no head set");
  assert(n >= 1 && (const_batch() == 1 || const_batch() == n) && image != nullptr && head_out != nullptr);
  prepare();
  const int64_t hc = buffer_channels_[head_.buffer];
  for_each_member(n, par, true, [&](Slice& s) {
    Member* const mine = s.member;  // split mode: this thread's place in its image group (start_row)
    const bool first = mine == nullptr || mine->index == 0;  // copies the image in and the head out
    const int64_t b0 = s.img0;
    for (int64_t t = first_step(); t < 0; ++t) run_delayed(s, t);  // steps computed ahead of the raster
    for (int64_t i = 0; i < h_; ++i) {
      bool stop = false;
      if (!start_row(s, mine, i, false, &stop)) continue;
      for (int64_t j = 0; j < w_; ++j) {
        if (s.member != nullptr && !boundary(s)) return;  // every thread is done with the previous position
        if (first)
          for (int64_t img = 0; img < s.nb; ++img)
            std::memcpy(s.px(*this, 0, i, img, j), image + (((b0 + img) * h_ + i) * w_ + j) * c_, c_ * sizeof(float));
        if (s.member != nullptr) s.member->wrote(0);
        run_delayed(s, i * w_ + j);
        run_steps(s, i, j, 0);
        // The first member copies the head out: meet when another member may have written it since the last meeting.
        if (s.member != nullptr && s.member->others_stepped && s.member->unmet(head_.buffer)) s.member->meet();
        if (first)
          for (int64_t img = 0; img < s.nb; ++img)
            std::memcpy(head_out + (((b0 + img) * h_ + i) * w_ + j) * hc, s.px(*this, head_.buffer, i, img, j),
                        hc * sizeof(float));
      }
    }
  });
}

void ColumnProgram::sample(int64_t n, uint64_t seed, float temperature, int64_t image_offset, int32_t* levels,
                           float* margins, const Parallel& par, const std::function<void(int64_t)>& on_row,
                           double* step_seconds, const int32_t* known, const std::atomic<bool>* cancel) const {
  if (head_.buffer < 0) throw std::invalid_argument("sample: no head set");
  std::string arg_err = checks::image_offset("sample", image_offset, n);
  if (arg_err.empty() && known != nullptr) arg_err = checks::known_levels("sample", known, n * h_ * w_ * c_, draw_levels());
  if (!arg_err.empty()) throw std::invalid_argument(arg_err);
  assert(const_batch() == 1 || const_batch() == n);
  assert(temperature > 0.0f && std::isfinite(temperature));
  assert(levels != nullptr);
  prepare();
  const DrawShape draw{head_.kind, head_.levels, head_.components, c_, head_.mixture_layout};
  const Kernels& kern = active_kernels();
  const size_t nsteps = steps_.size();
  std::mutex profile_mutex;
  if (step_seconds != nullptr) std::fill(step_seconds, step_seconds + nsteps + 1, 0.0);
  for_each_member(n, par, false, [&](Slice& s) {
    Member* const mine = s.member;  // split mode: this thread's place in its image group (start_row)
    const bool first = mine == nullptr || mine->index == 0;  // draws, on_row and the cancel decision
    const int64_t b0 = s.img0;
    std::vector<int64_t> ns(step_seconds != nullptr ? nsteps + 1 : 0, 0);  // last: the draws
    int64_t* prof = step_seconds != nullptr ? ns.data() : nullptr;
    // The image at a position is unknown until drawn: zero it (the slot held an older row). Done at the end of
    // the position before, so that in split mode the meeting that ends that position also publishes the zeros.
    auto zero_pixel = [&](int64_t i, int64_t j) {
      if (first)
        for (int64_t img = 0; img < s.nb; ++img) std::memset(s.px(*this, 0, i, img, j), 0, c_ * sizeof(float));
      if (s.member != nullptr) s.member->wrote(0);
    };
    for (int64_t t = first_step(); t < 0; ++t) run_delayed(s, t, prof);  // steps computed ahead of the raster
    zero_pixel(0, 0);
    bool left = false;  // split mode: this member left the group (member 0 goes on alone)
    for (int64_t i = 0; i < h_ && !left; ++i) {
      bool stop = false;
      if (!start_row(s, mine, i, cancel != nullptr && cancel->load(std::memory_order_relaxed), &stop)) {
        if (stop) {  // outputs left incomplete
          s.cancelled = true;
          return;
        }
        continue;
      }
      for (int64_t j = 0; j < w_; ++j) {
        const uint32_t position = static_cast<uint32_t>(i * w_ + j);
        if (s.member != nullptr && !boundary(s)) {  // every thread is done with the previous position
          left = true;
          break;
        }
        Member* const me = s.member;
        run_delayed(s, int64_t(position), prof);  // delayed steps: earlier positions, before the colour passes
        for (int c = 0; c < c_; ++c) {
          run_pass(s, i, j, c, prof);  // pass c: the channels that depend on exactly the c drawn so far
          const int64_t t_draw = prof != nullptr ? now_ns() : 0;
          // The first member draws: meet when another member may have written the head since the last meeting.
          if (me != nullptr && me->others_stepped && me->unmet(head_.buffer)) me->meet();
          for (int64_t img = 0; first && img < s.nb; ++img) {
            const float* pixel = s.px(*this, head_.buffer, i, img, j);
            const int64_t global = image_offset + b0 + img;
            const int64_t at = (((b0 + img) * h_ + i) * w_ + j) * c_ + c;
            float margin = INFINITY;  // a known level: no draw, no CDF boundary to be near
            const int level = known != nullptr && known[at] >= 0
                                  ? known[at]
                                  : draw_pixel_channel_cpu(kern, draw, pixel, c, levels + (at - c), temperature,
                                                           seed, static_cast<uint32_t>(global), position, &margin);
            levels[at] = level;
            if (margins != nullptr) margins[at] = margin;
            s.px(*this, 0, i, img, j)[c] = static_cast<float>(level) * head_.value_scale + head_.value_offset;
          }
          if (me != nullptr) me->wrote(0);
          if (prof != nullptr) prof[nsteps] += now_ns() - t_draw;
        }
        run_pass(s, i, j, c_, prof);  // the channels that read the last channel at this pixel (if any)
        // A step another member ran since the last meeting (pass C's) may read the image slot the next pixel
        // reuses: the other threads finish first.
        if (me != nullptr && me->others_stepped) me->meet();
        if (position + 1 < uint32_t(h_ * w_)) zero_pixel((position + 1) / w_, (position + 1) % w_);
      }
      if (on_row && b0 == 0 && first && !left) on_row(i + 1);
    }
    if (prof != nullptr) {
      std::lock_guard<std::mutex> lock(profile_mutex);
      for (size_t k = 0; k <= nsteps; ++k) step_seconds[k] += 1e-9 * static_cast<double>(ns[k]);
    }
  });
}

ColumnProgram build_from_spec(const ProgramSpec& spec, const std::vector<ConstTensor>& consts, int64_t batch,
                              bool flattenable) {
  if (consts.size() != spec.inputs.size())
    throw std::invalid_argument("the program spec declares " + std::to_string(spec.inputs.size()) +
                                " input arrays, got " + std::to_string(consts.size()));
  auto shape_text = [](const ConstTensor& t) {
    return "(" + std::to_string(t.n) + ", " + std::to_string(t.h) + ", " + std::to_string(t.w) + ", " +
           std::to_string(t.c) + ")";
  };
  ColumnProgram prog(spec.height, spec.width, spec.channels, spec.buffer_channels, flattenable);
  if (!spec.buffer_grids.empty()) prog.set_grids(spec.buffer_grids);
  // Input index -> constant index in the program (-1 for kernels, which a conv step reads directly).
  std::vector<int> const_of(consts.size(), -1);
  for (size_t k = 0; k < consts.size(); ++k) {
    const ConstTensor& t = consts[k];
    const SpecInput& in = spec.inputs[k];
    const std::string where = "input " + std::to_string(k);
    if (static_cast<int64_t>(t.data.size()) != t.n * t.h * t.w * t.c)
      throw std::invalid_argument(where + ": " + std::to_string(t.data.size()) + " floats for shape " + shape_text(t));
    if (in.is_kernel) {
      if (t.n != in.shape[0] || t.h != in.shape[1] || t.w != in.shape[2] || t.c != in.shape[3])
        throw std::invalid_argument(where + " (a conv kernel): expected shape (" + std::to_string(in.shape[0]) +
                                    ", " + std::to_string(in.shape[1]) + ", " + std::to_string(in.shape[2]) +
                                    ", " + std::to_string(in.shape[3]) + "), got " + shape_text(t));
      continue;
    }
    if (batch > 0 && t.n != 1 && t.n != batch)
      throw std::invalid_argument(where + " (a constant): first dimension must be 1 or the batch " +
                                  std::to_string(batch) + ", got shape " + shape_text(t));
    try {
      const_of[k] = prog.add_const(t);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(where + " (a constant): " + e.what());
    }
  }
  for (const Step& spec_step : spec.steps) {
    Step st = spec_step;
    for (Operand& o : st.operands)
      if (o.is_const) o.index = const_of.at(o.index);  // spec input -> program constant
    try {
      prog.add_step(st, st.kind == StepKind::kConv ? &consts.at(st.kernel) : nullptr);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("program spec line " + std::to_string(st.line) + ": " + e.what());
    }
  }
  prog.set_head(spec.head);
  return prog;
}

ColumnProgram build_from_spec(const std::string& spec, const std::vector<ConstTensor>& consts, int64_t batch,
                              bool flattenable) {
  return build_from_spec(parse_program_spec(spec), consts, batch, flattenable);
}

}  // namespace pcf
