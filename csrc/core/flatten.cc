// Core (framework-free C++17): ColumnProgram -> FlatProgram (flatten.h): epilogue fusion, dead steps, and one
// FlatStep per remaining step with its tap tables, live weights and operands in the pools.
#include "flatten.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace pcf {

// flat_program.h names kinds and functions by the enums' values.
static_assert(int(StepKind::kConv) == kFlatConv && int(StepKind::kBinary) == kFlatBinary &&
              int(StepKind::kAct) == kFlatAct && int(StepKind::kConcat) == kFlatConcat &&
              int(StepKind::kGather) == kFlatGather && int(StepKind::kSoftmax) == kFlatSoftmax &&
              int(StepKind::kReduce) == kFlatReduce, "flat step kinds");
static_assert(int(ActFn::kRelu) == 0 && int(ActFn::kLeakyRelu) == 8 && int(ActFn::kErf) == 13, "flat act fns");
static_assert(int(BinaryFn::kAdd) == 0 && int(BinaryFn::kMax) == 4 && int(BinaryFn::kMin) == 5, "flat binary fns");
static_assert(int(ReduceFn::kSum) == 0 && int(ReduceFn::kMean) == 1 && int(ReduceFn::kMax) == 2, "flat reduce fns");

namespace {

// A binary step's constant operand (-1: none) and whether it comes first.
int const_operand(const Step& st, bool* first) {
  for (size_t k = 0; k < st.operands.size(); ++k)
    if (st.operands[k].is_const) {
      *first = k == 0;
      return st.operands[k].index;
    }
  *first = false;
  return -1;
}

}  // namespace

FusionPlan plan_fusion(const ColumnProgram& program) {
  const std::vector<ProgramStep>& steps = program.steps();
  const std::vector<int64_t>& channels = program.buffer_channels();
  const int nbuf = static_cast<int>(channels.size());
  std::vector<int> readers(nbuf, 0), writers(nbuf, 0), producer(nbuf, -1);
  for (size_t k = 0; k < steps.size(); ++k) {
    const ProgramStep& st = steps[k];
    for (int b : st.ins) ++readers[b];
    if (writers[st.out]++ == 0) producer[st.out] = static_cast<int>(k);
  }
  ++readers[program.head().buffer];  // read by the draws
  ++readers[0];                      // the image: written by the draws
  std::vector<int> reader_of(nbuf, -1);
  for (size_t k = 0; k < steps.size(); ++k)
    for (int b : steps[k].ins) reader_of[b] = static_cast<int>(k);
  FusionPlan plan;
  plan.dead.assign(steps.size(), false);
  plan.fused.assign(steps.size(), false);
  plan.chain.assign(steps.size(), {});
  // Steps whose output nothing reads are dropped.
  std::vector<bool> live_buffer(nbuf, false);
  live_buffer[program.head().buffer] = true;
  for (size_t k = steps.size(); k-- > 0;) {
    if (!live_buffer[steps[k].out]) {
      plan.dead[k] = true;
      continue;
    }
    for (int b : steps[k].ins) live_buffer[b] = true;
  }
  for (size_t k = 0; k < steps.size(); ++k) {
    const ProgramStep& conv = steps[k];
    if (conv.kind != StepKind::kConv || plan.dead[k]) continue;
    int b = conv.out;
    while (readers[b] == 1 && writers[b] == 1 && reader_of[b] > static_cast<int>(k)) {
      const int s = reader_of[b];
      const ProgramStep& st = steps[s];
      if (st.phase != conv.phase || channels[st.out] != channels[b] || writers[st.out] != 1) break;
      if (st.kind == StepKind::kBinary) {
        if (st.ins.size() == 2) {
          const int other = st.ins[0] == b ? st.ins[1] : st.ins[0];
          if (other == b || producer[other] < 0 || producer[other] >= static_cast<int>(k)) break;
        }
      } else if (st.kind != StepKind::kAct) {
        break;
      }
      plan.fused[s] = true;
      plan.chain[k].push_back(s);
      b = st.out;
    }
  }
  return plan;
}

FlatProgram flatten(const ColumnProgram& program) {
  const HeadSpec& head = program.head();
  if (head.buffer < 0) throw std::invalid_argument("flatten: no head set");
  if (!program.flattenable())
    throw std::logic_error("flatten: the program was built without the GPU tables' weights (build it flattenable)");
  const std::vector<ProgramStep>& steps = program.steps();
  const std::vector<int64_t>& channels = program.buffer_channels();
  // Grids (docs/SEMANTICS.md, "Grids"): the CPU executor runs them; the flat program does not yet. Named first,
  // as the construct a multi-resolution model needs (its shifts and delays come with it).
  if (program.on_grids())
    for (const ProgramStep& st : steps) {
      const Grid& g = program.grid(st.out);
      const char* what = st.transpose                                                  ? "a transposed conv"
                         : st.kind == StepKind::kConv && (st.sy != 1 || st.sx != 1)   ? "a strided conv"
                         : g != program.grid(0)                                        ? "a step on a coarse grid"
                                                                                       : nullptr;
      if (what != nullptr)
        throw std::invalid_argument("flatten: step '" + st.name + "' is " + what + " (onto a " + std::to_string(g.ny) +
                                    "x" + std::to_string(g.nx) + " grid, 1/" + std::to_string(g.fy) + " x 1/" +
                                    std::to_string(g.fx) + " of the image): the GPU flat program does not take "
                                    "grids yet (the CPU executor does)");
    }
  // Shifts and delays (docs/SEMANTICS.md): the CPU executor runs them; the flat program does not yet.
  for (const ProgramStep& st : steps) {
    const char* what = st.kind == StepKind::kShift ? "a shift step"
                       : st.offset_taps            ? "a conv with offset taps (pad + VALID conv)"
                       : st.delayed()              ? "a delayed step"
                                                   : nullptr;
    if (what != nullptr)
      throw std::invalid_argument("flatten: step '" + st.name + "' is " + what + (st.delayed() ? " (delay=" +
                                  std::to_string(st.delay_y) + "," + std::to_string(st.delay_x) + ")" : std::string()) +
                                  ": the GPU flat program does not take shifts and delays yet (the CPU executor does)");
  }
  FlatProgram f;
  f.h = program.height();
  f.w = program.width();
  f.c = program.channels();
  f.head_kind = static_cast<int32_t>(head.kind);
  f.head_buffer = head.buffer;
  f.head_levels = head.levels;
  f.head_components = head.components;
  f.head_mixture_layout = static_cast<int32_t>(head.mixture_layout);
  f.head_scale = head.value_scale;
  f.head_offset = head.value_offset;
  f.channels = channels;
  const std::vector<int>& ring_rows = program.ring_rows();
  f.ring_rows.assign(ring_rows.begin(), ring_rows.end());
  for (const ConstTensor& t : program.consts()) {
    FlatConst fc{t.n, t.h, t.w, t.c, static_cast<int64_t>(f.fpool.size())};
    f.fpool.insert(f.fpool.end(), t.data.begin(), t.data.end());
    f.consts.push_back(fc);
  }
  const FusionPlan fusion = plan_fusion(program);
  for (size_t k = 0; k < steps.size(); ++k) {
    if (fusion.fused[k] || fusion.dead[k]) {
      ++(fusion.fused[k] ? f.fused_steps : f.dropped_steps);
      continue;
    }
    const ProgramStep& st = steps[k];
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
        const int64_t cout = channels[st.out];
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
            static_cast<int>(st.plan.pieces.size()) != fs.ntaps ||
            static_cast<int64_t>(st.live_kernel.size()) != fs.ntaps * channels[st.ins[0]] * cout)
          throw std::logic_error("flatten: step '" + st.name + "' has inconsistent tap tables");
        fs.weights_off = static_cast<int64_t>(f.fpool.size());
        f.fpool.insert(f.fpool.end(), st.live_kernel.begin(), st.live_kernel.end());
        fs.epilogue_off = static_cast<int64_t>(f.epilogues.size());
        int value = st.out;  // the buffer the chain's value stands for so far
        for (int s : fusion.chain[k]) {
          const ProgramStep& e = steps[s];
          FlatEpilogue ep;
          bool const_first = false;
          const int const_index = e.kind == StepKind::kBinary ? const_operand(e, &const_first) : -1;
          if (e.kind == StepKind::kAct) {
            ep.kind = kEpilogueAct;
            ep.fn = static_cast<int32_t>(e.act);
            ep.alpha = e.alpha;
          } else if (const_index >= 0) {
            ep.kind = kEpilogueConst;
            ep.fn = static_cast<int32_t>(e.binary);
            ep.operand = const_index;
            ep.operand_first = const_first ? 1 : 0;
          } else {
            ep.kind = kEpilogueBuffer;
            ep.fn = static_cast<int32_t>(e.binary);
            ep.operand_first = e.ins[0] == value ? 0 : 1;
            ep.operand = ep.operand_first ? e.ins[0] : e.ins[1];
          }
          f.epilogues.push_back(ep);
          value = e.out;
        }
        fs.nepilogue = static_cast<int32_t>(fusion.chain[k].size());
        fs.out = value;
        break;
      }
      case StepKind::kBinary: {
        bool const_first = false;
        fs.fn = static_cast<int32_t>(st.binary);
        fs.const_index = const_operand(st, &const_first);
        fs.const_first = const_first ? 1 : 0;
        break;
      }
      case StepKind::kAct:
        fs.fn = static_cast<int32_t>(st.act);
        fs.alpha = st.alpha;
        break;
      case StepKind::kConcat:
        fs.nparts = static_cast<int32_t>(st.operands.size());
        fs.parts_off = static_cast<int64_t>(f.ipool.size());
        for (const Operand& o : st.operands) {  // (is_const, constant or buffer id) pairs
          f.ipool.push_back(o.is_const ? 1 : 0);
          f.ipool.push_back(o.index);
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
      case StepKind::kShift:  // refused above
        break;
    }
    f.steps.push_back(fs);
  }
  return f;
}

}  // namespace pcf
