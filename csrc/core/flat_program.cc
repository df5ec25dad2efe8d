// Core (framework-free C++17): ColumnProgram -> FlatProgram tables, and the host emulation of the CUDA
// executor's loops (tests only: the GPU's arithmetic checked on machines without one).
#include "flat_program.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "checks.h"
#include "column_program.h"

namespace pcf {

// flat_program.h names kinds and functions by the enums' values.
static_assert(int(StepKind::kConv) == kFlatConv && int(StepKind::kBinary) == kFlatBinary &&
              int(StepKind::kAct) == kFlatAct && int(StepKind::kConcat) == kFlatConcat &&
              int(StepKind::kGather) == kFlatGather && int(StepKind::kSoftmax) == kFlatSoftmax &&
              int(StepKind::kReduce) == kFlatReduce, "flat step kinds");
static_assert(int(ActFn::kRelu) == 0 && int(ActFn::kLeakyRelu) == 8 && int(ActFn::kErf) == 13, "flat act fns");
static_assert(int(BinaryFn::kAdd) == 0 && int(BinaryFn::kMax) == 4 && int(BinaryFn::kMin) == 5, "flat binary fns");
static_assert(int(ReduceFn::kSum) == 0 && int(ReduceFn::kMean) == 1 && int(ReduceFn::kMax) == 2, "flat reduce fns");

FlatProgram ColumnProgram::flatten() const {
  if (head_.buffer < 0) throw std::invalid_argument("flatten: no head set");
  prepare();
  FlatProgram f;
  f.h = h_;
  f.w = w_;
  f.c = c_;
  f.head_kind = static_cast<int32_t>(head_.kind);
  f.head_buffer = head_.buffer;
  f.head_levels = head_.levels;
  f.head_scale = head_.value_scale;
  f.head_offset = head_.value_offset;
  f.channels = buffer_channels_;
  f.ring_rows.assign(ring_rows_.begin(), ring_rows_.end());
  for (const ConstTensor& t : consts_) {
    FlatConst fc{t.n, t.h, t.w, t.c, static_cast<int64_t>(f.fpool.size())};
    f.fpool.insert(f.fpool.end(), t.data.begin(), t.data.end());
    f.consts.push_back(fc);
  }
  // Epilogue fusion. A conv's output buffer read by exactly one step, an activation or a binary step at the
  // same pixel with the same phase and channel count, whose other operand (a constant, or a buffer produced
  // before the conv) is ready when the conv runs, is folded into the conv: the value goes through that step
  // before it is written, and the step and its input buffer disappear from the GPU's step list. Repeated
  // along the chain, keras.io's conv -> bias -> relu -> residual add becomes one step: fewer block-wide
  // synchronisations and no round trip through memory per elementwise step. The arithmetic is unchanged.
  const int nbuf = static_cast<int>(buffer_channels_.size());
  std::vector<int> readers(nbuf, 0), writers(nbuf, 0), producer(nbuf, -1);
  for (size_t k = 0; k < steps_.size(); ++k) {
    const ProgramStep& st = steps_[k];
    for (int b : st.ins) ++readers[b];
    if (writers[st.out]++ == 0) producer[st.out] = static_cast<int>(k);
  }
  ++readers[head_.buffer];  // read by the draws
  ++readers[0];             // the image: written by the draws
  std::vector<int> reader_of(nbuf, -1);
  for (size_t k = 0; k < steps_.size(); ++k)
    for (int b : steps_[k].ins) reader_of[b] = static_cast<int>(k);
  // Steps whose output nothing reads (a final sigmoid next to the logits head) are dropped.
  std::vector<bool> live_buffer(nbuf, false), dead(steps_.size(), false);
  live_buffer[head_.buffer] = true;
  for (size_t k = steps_.size(); k-- > 0;) {
    if (!live_buffer[steps_[k].out]) {
      dead[k] = true;
      continue;
    }
    for (int b : steps_[k].ins) live_buffer[b] = true;
  }
  std::vector<bool> fused(steps_.size(), false);
  std::vector<std::vector<int>> chain(steps_.size());  // conv k -> the steps fused into it, in order
  for (size_t k = 0; k < steps_.size(); ++k) {
    const ProgramStep& conv = steps_[k];
    if (conv.kind != StepKind::kConv || dead[k]) continue;
    int b = conv.out;
    while (readers[b] == 1 && writers[b] == 1 && reader_of[b] > static_cast<int>(k)) {
      const int s = reader_of[b];
      const ProgramStep& st = steps_[s];
      if (st.phase != conv.phase || buffer_channels_[st.out] != buffer_channels_[b] || writers[st.out] != 1) break;
      if (st.kind == StepKind::kBinary) {
        if (st.ins.size() == 2) {
          const int other = st.ins[0] == b ? st.ins[1] : st.ins[0];
          if (other == b || producer[other] < 0 || producer[other] >= static_cast<int>(k)) break;
        }
      } else if (st.kind != StepKind::kAct) {
        break;
      }
      fused[s] = true;
      chain[k].push_back(s);
      b = st.out;
    }
  }

  for (size_t k = 0; k < steps_.size(); ++k) {
    if (fused[k] || dead[k]) {
      ++(fused[k] ? f.fused_steps : f.dropped_steps);
      continue;
    }
    const ProgramStep& st = steps_[k];
    FlatStep fs;
    fs.kind = static_cast<int32_t>(st.kind);
    fs.out = st.out;
    fs.in0 = st.ins.empty() ? -1 : st.ins[0];
    fs.in1 = st.ins.size() > 1 ? st.ins[1] : -1;
    fs.phase = st.phase;
    f.max_phase = std::max(f.max_phase, st.phase);
    switch (st.kind) {
      case StepKind::kConv: {
        const TapSet& ts = st.taps;
        const int64_t cout = buffer_channels_[st.out];
        fs.ntaps = ts.num_taps();
        fs.taps_off = static_cast<int64_t>(f.ipool.size());
        for (const auto& pc : st.plan.pieces) {  // one piece per live tap, in tap order
          f.ipool.push_back(static_cast<int32_t>(pc.oy));
          f.ipool.push_back(static_cast<int32_t>(pc.ox));
        }
        fs.ranges_off = static_cast<int64_t>(f.ipool.size());
        f.ipool.insert(f.ipool.end(), ts.lo.begin(), ts.lo.end());
        f.ipool.insert(f.ipool.end(), ts.hi.begin(), ts.hi.end());
        if (static_cast<int64_t>(ts.lo.size()) != fs.ntaps * cout ||
            static_cast<int>(st.plan.pieces.size()) != fs.ntaps)
          throw std::logic_error("flatten: step '" + st.name + "' has inconsistent tap tables");
        fs.weights_off = static_cast<int64_t>(f.fpool.size());
        f.fpool.insert(f.fpool.end(), st.live_kernel.begin(), st.live_kernel.end());
        fs.epilogue_off = static_cast<int64_t>(f.epilogues.size());
        int value = st.out;  // the buffer the chain's value stands for so far
        for (int s : chain[k]) {
          const ProgramStep& e = steps_[s];
          FlatEpilogue ep;
          if (e.kind == StepKind::kAct) {
            ep.kind = kEpilogueAct;
            ep.fn = static_cast<int32_t>(e.act);
            ep.alpha = e.alpha;
          } else if (e.const_index >= 0) {
            ep.kind = kEpilogueConst;
            ep.fn = static_cast<int32_t>(e.binary);
            ep.operand = e.const_index;
            ep.operand_first = e.const_first ? 1 : 0;
          } else {
            ep.kind = kEpilogueBuffer;
            ep.fn = static_cast<int32_t>(e.binary);
            ep.operand_first = e.ins[0] == value ? 0 : 1;
            ep.operand = ep.operand_first ? e.ins[0] : e.ins[1];
          }
          f.epilogues.push_back(ep);
          value = e.out;
        }
        fs.nepilogue = static_cast<int32_t>(chain[k].size());
        fs.out = value;
        break;
      }
      case StepKind::kBinary:
        fs.fn = static_cast<int32_t>(st.binary);
        fs.const_index = st.const_index;
        fs.const_first = st.const_first ? 1 : 0;
        break;
      case StepKind::kAct:
        fs.fn = static_cast<int32_t>(st.act);
        fs.alpha = st.alpha;
        break;
      case StepKind::kConcat:
        fs.nparts = static_cast<int32_t>(st.parts.size());
        fs.parts_off = static_cast<int64_t>(f.ipool.size());
        for (auto [is_const, idx] : st.parts) {  // buffer parts as buffer ids, not indices into ins
          f.ipool.push_back(is_const ? 1 : 0);
          f.ipool.push_back(is_const ? idx : st.ins[idx]);
        }
        break;
      case StepKind::kGather:
        fs.channels_off = static_cast<int64_t>(f.ipool.size());
        f.ipool.insert(f.ipool.end(), st.channels.begin(), st.channels.end());
        break;
      case StepKind::kSoftmax:
        fs.group = st.group;
        fs.log = st.log ? 1 : 0;
        break;
      case StepKind::kReduce:
        fs.fn = static_cast<int32_t>(st.reduce);
        break;
    }
    f.steps.push_back(fs);
  }
  return f;
}

int64_t FlatProgram::ring_layout(int64_t n, std::vector<int64_t>* ring_off) const {
  ring_off->assign(channels.size(), 0);
  int64_t total = 0;
  for (size_t b = 0; b < channels.size(); ++b) {
    (*ring_off)[b] = total;
    total += int64_t(ring_rows[b]) * n * w * channels[b];
  }
  return total;
}

int64_t FlatProgram::max_const_batch() const {
  int64_t n = 1;
  for (const FlatConst& t : consts) n = std::max(n, t.n);
  return n;
}

std::vector<FlatProgram::Table> FlatProgram::tables() const {
  return {{steps.data(), steps.size() * sizeof(FlatStep)},
          {ipool.data(), ipool.size() * sizeof(int32_t)},
          {fpool.data(), fpool.size() * sizeof(float)},
          {consts.data(), consts.size() * sizeof(FlatConst)},
          {epilogues.data(), epilogues.size() * sizeof(FlatEpilogue)},
          {channels.data(), channels.size() * sizeof(int64_t)},
          {ring_rows.data(), ring_rows.size() * sizeof(int32_t)}};
}

FlatView FlatProgram::view_over(const std::vector<const void*>& t, float* ring, const int64_t* ring_off,
                                int64_t n) const {
  if (t.size() != 7) throw std::logic_error("FlatProgram::view_over: expected 7 tables");
  FlatView v;
  v.h = h;
  v.w = w;
  v.c = c;
  v.nsteps = static_cast<int32_t>(steps.size());
  v.max_phase = max_phase;
  v.head_kind = head_kind;
  v.head_buffer = head_buffer;
  v.head_levels = head_levels;
  v.head_scale = head_scale;
  v.head_offset = head_offset;
  v.steps = static_cast<const FlatStep*>(t[0]);
  v.ipool = static_cast<const int32_t*>(t[1]);
  v.fpool = static_cast<const float*>(t[2]);
  v.consts = static_cast<const FlatConst*>(t[3]);
  v.epilogues = static_cast<const FlatEpilogue*>(t[4]);
  v.channels = static_cast<const int64_t*>(t[5]);
  v.ring_rows = static_cast<const int32_t*>(t[6]);
  v.ring_off = ring_off;
  v.ring = ring;
  v.n = n;
  return v;
}

FlatView FlatProgram::host_view(float* ring, const int64_t* ring_off, int64_t n) const {
  std::vector<const void*> data;
  for (const Table& t : tables()) data.push_back(t.data);
  return view_over(data, ring, ring_off, n);
}

namespace {

// One host thread playing every thread of a block in turn: between two syncs the work items of a step are
// independent, so running them in order computes what the block computes.
struct SequentialThreads {
  template <class F>
  void for_each(int64_t count, F f) {
    for (int64_t k = 0; k < count; ++k) f(k);
  }
  void sync() {}
};

}  // namespace

std::string known_levels_error(const int32_t* known, int64_t count, int levels, const char* fn) {
  for (int64_t k = 0; k < count; ++k)
    if (known[k] < -1 || known[k] >= levels)
      return std::string(fn) + ": known levels must be -1 (draw) or in [0, " + std::to_string(levels) + "), got " +
             std::to_string(known[k]) + " at flat index " + std::to_string(k);
  return "";
}

std::string FlatProgram::check_call(int64_t n, int images_per_block, const char* fn) const {
  std::string err = checks::count(fn, n);
  if (err.empty() && images_per_block < 1)
    err = std::string(fn) + ": images_per_block must be >= 1, got " + std::to_string(images_per_block);
  if (err.empty()) err = checks::batch(fn, max_const_batch(), n);
  return err;
}

namespace {

// The emulated launch: checks, a zeroed ring for n images, then block(view, threads, img0, nb) for each block
// of images_per_block images in turn, as the kernel's blocks would run them.
template <class Block>
void emulate_launch(const FlatProgram& p, int64_t n, int images_per_block, const char* fn, Block block) {
  const std::string err = p.check_call(n, images_per_block, fn);
  if (!err.empty()) throw std::invalid_argument(err);
  std::vector<int64_t> ring_off;
  std::vector<float> ring(static_cast<size_t>(p.ring_layout(n, &ring_off)), 0.0f);
  const FlatView v = p.host_view(ring.data(), ring_off.data(), n);
  SequentialThreads th;
  for (int64_t b0 = 0; b0 < n; b0 += images_per_block)
    block(v, th, b0, static_cast<int>(std::min<int64_t>(images_per_block, n - b0)));
}

}  // namespace

void FlatProgram::sample_emulated(int64_t n, uint64_t seed, float temperature, int64_t image_offset,
                                  int images_per_block, int32_t* levels, float* margins,
                                  const int32_t* known) const {
  std::string err = checks::image_offset("sample_emulated", image_offset, n);
  if (err.empty() && known != nullptr) err = known_levels_error(known, n * h * w * c, draw_levels(), "sample_emulated");
  if (!err.empty()) throw std::invalid_argument(err);
  emulate_launch(*this, n, images_per_block, "sample_emulated",
                 [&](const FlatView& v, SequentialThreads& th, int64_t img0, int nb) {
                   flat::sample_images(v, th, img0, nb, seed, temperature, image_offset, levels, margins, known);
                 });
}

void FlatProgram::teacher_forced_emulated(const float* image, int64_t n, int images_per_block,
                                          float* head_out) const {
  emulate_launch(*this, n, images_per_block, "teacher_forced_emulated",
                 [&](const FlatView& v, SequentialThreads& th, int64_t img0, int nb) {
                   flat::teacher_forced_images(v, th, img0, nb, image, head_out);
                 });
}

}  // namespace pcf
