// Core (framework-free C++17): the program record -- what a column program is, written once.
//
// A program (lowered from a traced Keras model by the Python front end) is an image shape, buffers
// (batch, H, W, C), constant inputs, a list of steps over the buffers and a head that turns a buffer's values
// into drawn levels. This header is the one description of those, used by
//   - the spec text's parser and writer (program_spec.{h,cc}: ProgramSpec <-> text),
//   - the CPU executor (column_program.{h,cc}: builds a ColumnProgram from a ProgramSpec; each ProgramStep
//     is a Step plus what the executor derives from it: tap sets, gather plans),
//   - the flattener (flatten.{h,cc}: ColumnProgram -> the GPU executor's FlatProgram tables).
// A new step kind is a new StepKind value and name, its fields here, its line in the spec format and its
// execution in each executor.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "philox.h"  // DrawHead

namespace pcf {

// The values are also the GPU tables' plain ints (flat_program.h; flatten.cc checks them).
// kShift (after the others: the GPU tables' values stay): out[i, j] = in[i + dy, j + dx], zero outside the image.
enum class StepKind { kConv, kBinary, kAct, kConcat, kGather, kSoftmax, kReduce, kShift };
enum class BinaryFn { kAdd, kSub, kMul, kDiv, kMax, kMin };
enum class ActFn { kRelu, kRelu6, kElu, kSelu, kTanh, kSigmoid, kSoftplus, kSoftsign, kLeakyRelu, kNeg, kExp,
                   kSquare, kAbs, kErf };
enum class ReduceFn { kSum, kMean, kMax, kMin };

// Each enum's names, in value order: the spec text's keywords and values, the bindings' strings and the
// Python lowering's step attributes (one table per enum, program.cc).
template <typename E>
using NameTable = std::vector<std::pair<const char*, E>>;
template <typename E>
const NameTable<E>& name_table();
template <>
const NameTable<StepKind>& name_table<StepKind>();
template <>
const NameTable<BinaryFn>& name_table<BinaryFn>();
template <>
const NameTable<ActFn>& name_table<ActFn>();
template <>
const NameTable<ReduceFn>& name_table<ReduceFn>();
template <>
const NameTable<DrawHead>& name_table<DrawHead>();

template <typename E>
const char* name_of(E e) {
  for (const auto& [n, v] : name_table<E>())
    if (v == e) return n;
  return "?";
}

// The value called `name`; false (and *out untouched) when no value has that name.
template <typename E>
bool parse_name(const std::string& name, E* out) {
  for (const auto& [n, v] : name_table<E>())
    if (name == n) {
      *out = v;
      return true;
    }
  return false;
}

// "a, b, c": every name of E, for messages that list what is accepted.
template <typename E>
std::string name_list() {
  std::string names;
  for (const auto& [n, v] : name_table<E>()) names += (names.empty() ? "" : ", ") + std::string(n);
  return names;
}

// A constant operand broadcast against (batch, H, W, C): each dimension is 1 or the full size. Also how a
// conv's kernel arrives at the builder: (kh, kw, cin, cout) in (n, h, w, c).
struct ConstTensor {
  int64_t n = 1, h = 1, w = 1, c = 1;
  std::vector<float> data;
  const float* pixel(int64_t img, int64_t i, int64_t j) const {
    return data.data() + (((n > 1 ? img : 0) * h + (h > 1 ? i : 0)) * w + (w > 1 ? j : 0)) * c;
  }
};

// docs/SEMANTICS.md, "Grids": the grid a buffer lives on. Its position (I, J) of ny x nx sits at image position
// (fy I, fx J) (the anchor); the image's grid is (1, 1, H, W).
struct Grid {
  int fy = 1, fx = 1, ny = 0, nx = 0;
  bool operator==(const Grid& o) const { return fy == o.fy && fx == o.fx && ny == o.ny && nx == o.nx; }
  bool operator!=(const Grid& o) const { return !(*this == o); }
};

// How the head's values become levels and levels become model input.
struct HeadSpec {
  DrawHead kind = DrawHead::kBernoulli;
  int buffer = -1;        // the buffer holding logits (or probabilities)
  int levels = 1;         // values per image channel in that buffer (1 for bernoulli); a mixture: levels drawn
  int components = 0;     // kLogisticMixture: K (the buffer holds mixture_head_values(K, channels) values)
  MixtureLayout mixture_layout = MixtureLayout::kPixelCnnPP;  // kLogisticMixture: its parameter layout (philox.h)
  float value_scale = 1;  // model input = level * value_scale + value_offset
  float value_offset = 0;
};

// What a step reads: a buffer, or a constant. In a ProgramSpec a constant is spec input `index` (`i<k>` in
// the text); in a ColumnProgram it is the program's constant `index` (build_from_spec maps one to the other:
// kernels are inputs, not constants).
struct Operand {
  bool is_const = false;
  int index = 0;
};

// One step: what it computes, from what, into which buffer.
struct Step {
  StepKind kind = StepKind::kAct;
  int out = 0;  // the buffer written (never 0, the image)
  // conv, act, gather, softmax, reduce: the one buffer read; binary: (a, b), at most one a constant (a
  // 1-channel operand is broadcast over the output's channels); concat: the parts in channel order.
  std::vector<Operand> operands;
  // kConv: the spec input holding its (kh, kw, cin, cout) weights (the executor keeps its own packed copy);
  // dilation and padding ('valid' only for 1x1 kernels: the image size never changes).
  int kernel = -1;
  int dh = 1, dw = 1;
  bool same_padding = true;
  BinaryFn binary = BinaryFn::kAdd;  // kBinary
  ActFn act = ActFn::kRelu;          // kAct
  float alpha = 0.2f;                // kAct: the leaky relu's slope
  std::vector<int32_t> channels;     // kGather: the input channel of each output channel
  int group = 1;                     // kSoftmax: consecutive channels normalised together
  bool log = false;                  // kSoftmax: log-softmax
  ReduceFn reduce = ReduceFn::kSum;  // kReduce: over the input's channels into one
  // The image channels at its own pixel its output depends on (the colour pass that computes it); with
  // phase_runs, each output channel's own phase as (phase, count) runs in channel order (the largest is
  // `phase`), empty when every channel has `phase`.
  int phase = 0;
  std::vector<int64_t> phase_runs;
  // Shifts and delays (docs/SEMANTICS.md, "Shifts are read offsets", "Delays"). kConv with offset_taps: tap
  // (ky, kx) reads offset (oy + ky * dh, ox + kx * dw) (a pad + VALID conv; same_padding is then unused).
  bool offset_taps = false;
  int oy = 0, ox = 0;
  int dy = 0, dx = 0;  // kShift: the offset it reads its input at
  // When this step computes position (i, j): at the raster step (i + delay_y) W + min(j + delay_x, W), before
  // the colour passes; (0, 0): at its own position's step, in its colour pass (every seed model's steps).
  int delay_y = 0, delay_x = 0;
  // Grids (docs/SEMANTICS.md, "Grids"). kConv with stride (sy, sx) != 1: output (I, J) reads input (sy I + oy +
  // ky dh, sx J + ox + kx dw) (offset_taps). transpose: output (i, j) reads input ((i + oy - ky) / sy,
  // (j + ox - kx) / sx) for the taps where both divide (a transposed conv; offset_taps, dh = dw = 1).
  int sy = 1, sx = 1;
  bool transpose = false;
  // Set by the executor of a program on grids (not in the spec): computed at each position's ready step, before
  // the colour passes (column_program_grids.cc), like a delayed step.
  bool scheduled = false;
  bool delayed() const { return delay_y != 0 || delay_x != 0 || scheduled; }
  std::string name;  // the layer it came from, for error messages
  int line = 0;      // the spec line it was parsed from (0: built in code), for build errors

  // The one buffer a single-input kind reads.
  int input() const { return operands.at(0).index; }
};

// A spec input: a constant (rank 4, broadcast) or a conv's kernel of a declared shape.
struct SpecInput {
  bool is_kernel = false;
  int64_t shape[4] = {0, 0, 0, 0};  // kernels: (kh, kw, cin, cout)
};

// A whole program as its spec text states it (program_spec.h parses and writes it; build_from_spec in
// column_program.h turns it plus its input arrays into an executable ColumnProgram).
struct ProgramSpec {
  int height = 0, width = 0, channels = 0;
  std::vector<int64_t> buffer_channels;  // buffer 0 is the image
  std::vector<Grid> buffer_grids;        // per buffer (the spec's `grids` statement); empty: all on the image's
  std::vector<SpecInput> inputs;
  std::vector<Step> steps;
  HeadSpec head;
};

}  // namespace pcf
