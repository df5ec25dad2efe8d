// Core (framework-free C++17): the column program and its cached incremental executor.
//
// A program (lowered from a traced Keras model by pixelcnn_fast/lowering.py) is a list of steps over
// buffers (batch, H, W, C). The executor visits positions in raster order and computes, for each step,
// only the new position's values, reading earlier positions from per-buffer ring caches that hold just
// the rows the consumers' taps reach: O(batch x receptive rows x W x C) memory per buffer, O(H x W)
// work per image. Convs are the same gather-GEMM over live taps as the masked conv (gather_plan.h).
//
// Channels of one pixel (R, G, B) are drawn in order. A step's phase is the number of image channels
// at its own pixel that its output depends on (from the lowering's frontiers): after image channel c is
// drawn, pass c + 1 computes the channels of phase c + 1: with per-channel phases (set_channel_phases,
// written by the lowering) pass p runs only the conv segments and elementwise channel ranges that hold a
// channel of phase p, so an RGB colour-group model computes each channel block once, not once per channel
// drawn; a step without them runs whole in every pass 0..phase. Every cached value is exact, and a
// grayscale model whose steps all have phase 0 computes each step once per position.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "flat_program.h"
#include "gather_plan.h"
#include "parallel.h"
#include "philox.h"
#include "tapset.h"

namespace pcf {

enum class StepKind { kConv, kBinary, kAct, kConcat, kGather, kSoftmax, kReduce };
enum class BinaryFn { kAdd, kSub, kMul, kDiv, kMax, kMin };
enum class ActFn { kRelu, kRelu6, kElu, kSelu, kTanh, kSigmoid, kSoftplus, kSoftsign, kLeakyRelu, kNeg, kExp,
                   kSquare, kAbs, kErf };
enum class ReduceFn { kSum, kMean, kMax, kMin };

// A constant operand broadcast against (batch, H, W, C): each dimension is 1 or the full size.
struct ConstTensor {
  int64_t n = 1, h = 1, w = 1, c = 1;
  std::vector<float> data;
  const float* pixel(int64_t img, int64_t i, int64_t j) const {
    return data.data() + (((n > 1 ? img : 0) * h + (h > 1 ? i : 0)) * w + (w > 1 ? j : 0)) * c;
  }
};

struct ProgramStep {
  StepKind kind = StepKind::kAct;
  int out = 0;
  std::vector<int> ins;
  int phase = 0;                    // the largest of its channels' phases
  std::vector<int> channel_phase;   // per output channel (empty: every channel has `phase`)
  std::string name;  // the layer it came from, for error messages
  // kConv
  TapSet taps;
  detail::GatherPlan plan;
  std::vector<float> live_kernel;  // [live tap][cin][cout]: the weights the GPU executor reads (flatten())
  // kBinary (const_index >= 0: the second operand is that constant)
  BinaryFn binary = BinaryFn::kAdd;
  int const_index = -1;
  bool const_first = false;
  // kAct
  ActFn act = ActFn::kRelu;
  float alpha = 0.2f;
  // kConcat: (is_const, index into ins or consts) per part, in order
  std::vector<std::pair<bool, int>> parts;
  // kGather
  std::vector<int32_t> channels;
  // kSoftmax
  int group = 1;
  bool log = false;
  // kReduce
  ReduceFn reduce = ReduceFn::kSum;
};

// How the head's values become levels and levels become model input.
struct HeadSpec {
  DrawHead kind = DrawHead::kBernoulli;
  int buffer = -1;        // the buffer holding logits (or probabilities)
  int levels = 1;         // values per image channel in that buffer (1 for bernoulli)
  float value_scale = 1;  // model input = level * value_scale + value_offset
  float value_offset = 0;
};

class ColumnProgram {
 public:
  ColumnProgram(int height, int width, int channels, std::vector<int64_t> buffer_channels);

  int add_const(ConstTensor t);
  // Each add_* checks its arguments and throws std::invalid_argument naming the step and the value.
  void add_conv(int out, int in, const float* kernel, int kh, int kw, int dh, int dw, bool same_padding,
                int phase, const std::string& name);
  void add_binary(int out, std::vector<int> ins, BinaryFn fn, int const_index, bool const_first, int phase,
                  const std::string& name);
  void add_act(int out, int in, ActFn fn, float alpha, int phase, const std::string& name);
  void add_concat(int out, std::vector<int> ins, std::vector<std::pair<bool, int>> parts, int phase,
                  const std::string& name);
  void add_gather(int out, int in, std::vector<int32_t> channels, int phase, const std::string& name);
  void add_softmax(int out, int in, int group, bool log, int phase, const std::string& name);
  void add_reduce(int out, int in, ReduceFn fn, int phase, const std::string& name);
  void set_head(const HeadSpec& head);
  // Output channel c of step k depends on the first phases[c] image channels at its own pixel (<= the
  // step's phase, the largest equal to it): the colour pass that computes it. Throws naming the step.
  void set_channel_phases(int k, std::vector<int> phases);

  // Feeds `image` (n, H, W, C) and writes the head buffer at every position to `head_out`
  // (n, H, W, head channels): the teacher-forced check that the cached path equals a full pass.
  void teacher_forced(const float* image, int64_t n, float* head_out, const Parallel& par) const;
  // Draws n images: levels (n, H, W, C) int32. image_offset numbers the images for the random numbers.
  // margins (optional, n*H*W*C): distance of each draw's uniform to the nearest CDF boundary.
  // on_row (optional) is called by the thread of the first images after each row: rows done so far.
  // step_seconds (optional, num_steps() + 1 entries, zeroed here): thread-seconds spent in each step,
  // the last entry in the draws; a profile for reports (two clock reads per step and position).
  // known (optional, n*H*W*C, image completion): a value >= 0 is that element's given level, written
  // instead of drawn (its margin is +inf); -1 draws it. Checked by known_levels_error (flat_program.h).
  // cancel (optional): checked by every thread once per row; when set (e.g. by on_row on Ctrl-C) the call
  // returns early with the outputs incomplete, and the program stays usable.
  // Preconditions (the adapters check them with checks.h; asserted in debug builds): 1 <= n,
  // image_offset + n <= 2**32, n == const_batch() when that is > 1, temperature positive and finite.
  // Several threads may call sample() / teacher_forced() on one program at once.
  void sample(int64_t n, uint64_t seed, float temperature, int64_t image_offset, int32_t* levels,
              float* margins, const Parallel& par, const std::function<void(int64_t)>& on_row = nullptr,
              double* step_seconds = nullptr, const int32_t* known = nullptr,
              const std::atomic<bool>* cancel = nullptr) const;
  // Levels a head draws per image channel (2 for bernoulli): a known level must be below it.
  int draw_levels() const { return head_.kind == DrawHead::kBernoulli ? 2 : head_.levels; }

  int height() const { return h_; }
  int width() const { return w_; }
  int channels() const { return c_; }
  // Images the per-image constants (condition embeddings) hold: 1 when every constant is shared.
  int64_t const_batch() const;
  int num_steps() const { return static_cast<int>(steps_.size()); }
  const std::string& step_name(int k) const { return steps_.at(k).name; }
  const char* step_kind(int k) const;

  int64_t head_channels() const { return buffer_channels_.at(head_.buffer); }
  // Floats of ring cache per image (all buffers), for reports.
  int64_t cache_floats_per_image() const;
  // Multiply-adds per position per image over live taps (convs only), for GFLOP/s reports.
  int64_t macs_per_position() const;
  // The same, counting what the colour passes run: per pass, a conv's segments (destination channel
  // ranges) holding a channel computed in that pass. With per-channel phases an RGB colour-group model
  // executes macs_per_position() (each block once); without them a step of phase p runs in passes 0..p,
  // up to (C + 1)x; a grey model with every step at phase 0 executes it exactly.
  int64_t executed_macs_per_position() const;

  // The program as flat tables for the GPU executor and its host emulation (flat_program.h).
  FlatProgram flatten() const;

 private:
  struct Slice;  // per-thread ring caches of a contiguous range of images
  // What one step computes in one colour pass: nothing, all of it, or the conv segments `segs` /
  // the channels [lo, hi) of an elementwise step that hold a channel of that pass's phase.
  struct PassPart {
    bool run = false, whole = true;
    int64_t lo = 0, hi = 0;
    std::vector<int> segs;
  };
  void prepare() const;
  // The steps' parts of colour pass p (0..C) at (i, j); ns as run_steps.
  void run_pass(Slice& s, int64_t i, int64_t j, int p, int64_t* ns = nullptr) const;
  Slice make_slice(int64_t b0, int64_t b1) const;  // ring caches for images [b0, b1)
  // Steps of phase >= min_phase at (i, j); ns (optional, one entry per step) accumulates their times.
  void run_steps(Slice& s, int64_t i, int64_t j, int min_phase, int64_t* ns = nullptr) const;
  void run_step(Slice& s, const ProgramStep& st, int64_t i, int64_t j, const PassPart* part = nullptr) const;
  void check_buffer(int b, const char* what, const std::string& name) const;

  int h_, w_, c_;
  std::vector<int64_t> buffer_channels_;
  std::vector<ProgramStep> steps_;
  std::vector<ConstTensor> consts_;
  HeadSpec head_;
  mutable std::vector<int> ring_rows_;  // rows cached per buffer
  mutable std::vector<std::vector<PassPart>> pass_parts_;  // [step][pass 0..C]
  mutable bool prepared_ = false;
};

}  // namespace pcf
