// Core (framework-free C++17): the column program and its cached incremental executor.
//
// A program (program.h: lowered from a traced Keras model by the Python front end) is a list of steps over
// buffers (batch, H, W, C). The executor visits positions in raster order and computes, for each step,
// only the new position's values, reading earlier positions from per-buffer ring caches that hold just
// the rows the consumers' taps reach: O(batch x receptive rows x W x C) memory per buffer, O(H x W)
// work per image. Convs are the same gather-GEMM over live taps as the masked conv (gather_plan.h).
//
// Channels of one pixel (R, G, B) are drawn in order. A step's phase is the number of image channels
// at its own pixel that its output depends on (from the lowering's frontiers): after image channel c is
// drawn, pass c + 1 computes the channels of phase c + 1: with per-channel phases (Step::phase_runs,
// written by the lowering) pass p runs only the conv segments and elementwise channel ranges that hold a
// channel of phase p, so an RGB colour-group model computes each channel block once, not once per channel
// drawn; a step without them runs whole in every pass 0..phase. Every cached value is exact, and a
// grayscale model whose steps all have phase 0 computes each step once per position.
//
// Threads: a call with at least as many images as threads gives each thread a contiguous slice of images (no
// synchronisation between positions). With fewer images than threads (batch 1 on a multi-core machine), the
// images form groups and each group's threads -- a Team (team.h) -- split every position's work: a conv's
// output channels (column windows of its GEMM segments) together with the steps fused into its epilogue (each
// thread the op channels that read its own windows: a gate's halves in matching windows), an elementwise step's
// channel ranges; the other kinds and the draws run on the group's first thread. Programs on coarse grids keep
// images per thread. The threads meet at a spinning barrier only before a step
// that reads what another thread wrote since the last meeting (column_split.cc plans who writes what). Each
// output element is the same sum in the same order either way, so every thread count gives bit-identical
// images, margins and teacher-forced heads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "gather_plan.h"
#include "parallel.h"
#include "philox.h"
#include "program.h"
#include "tapset.h"
#include "team.h"

namespace pcf {

// A step as the executor holds it: the program record's Step (its constant operands index the program's
// constants) plus what the executor derives from it when the step is added.
struct ProgramStep : Step {
  std::vector<int> ins;             // the buffers it reads, in operand order
  std::vector<int> channel_phase;   // phase_runs per output channel (empty: every channel has `phase`)
  // kConv
  TapSet taps;
  detail::GatherPlan plan;  // the gather-GEMM over live taps, with the weights packed for the microkernels
  // [live tap][cin][cout]: the weights as the GPU tables hold them, kept only by a program built
  // `flattenable` (flatten.h); a CPU-only program has just the packed copy in `plan`.
  std::vector<float> live_kernel;
  // Grids (column_program_grids.cc). A transposed conv: per output phase (i mod sy) * sx + (j mod sx), the taps
  // live at that phase and their gather plan, offsets relative to (i div sy, j div sx).
  std::vector<TapSet> phase_taps;
  std::vector<detail::GatherPlan> phase_plans;
  // A scheduled step: each output position's ready raster step, and the positions in the order they are computed
  // (by ready step, then position).
  std::vector<int64_t> ready_at, order;
};

namespace grids {
// Floor division and a non-negative remainder (a transposed conv's phase of a fine position).
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t pos_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }
inline bool is_grid_conv(const Step& st) {
  return st.kind == StepKind::kConv && (st.transpose || st.sy != 1 || st.sx != 1);
}
}  // namespace grids
// How a call with fewer images than threads uses them (column_program.h, "Threads"), process-wide: kAuto splits
// each position's work and falls back to one thread per image group when the split is slower than one thread's
// pace (a busy machine, or two vCPUs placed badly), timed by calls that keep one thread per image (column_split.cc);
// kAlways splits every row, never falling back (tests: the split path whatever the load); kNever keeps one
// thread per image (the executor as it was before the split; benchmarks compare the two in one process);
// kAutoSlow is kAuto finding every split slower than one thread (a test seam: the fallback and its backoff
// without a busy machine).
enum class PositionSplit { kAuto, kAlways, kNever, kAutoSlow };
void set_position_split(PositionSplit policy);
PositionSplit position_split();

class ColumnProgram {
 public:
  // flattenable: keep each conv's weights in the GPU tables' layout (ProgramStep::live_kernel), which
  // flatten() needs; a program only the CPU executor runs does without that copy.
  ColumnProgram(int height, int width, int channels, std::vector<int64_t> buffer_channels,
                bool flattenable = false);

  int add_const(ConstTensor t);
  // Appends a step; its constant operands index add_const's constants. A conv's weights come in `kernel`
  // ((kh, kw, cin, cout) in (n, h, w, c)). Checks the step against the buffers and constants and throws
  // std::invalid_argument naming the step and the value.
  void add_step(const Step& step, const ConstTensor* kernel = nullptr);
  void set_head(const HeadSpec& head);
  // docs/SEMANTICS.md, "Grids": each buffer's grid, before any step (build_from_spec calls it when the spec has a
  // `grids` statement). The program is then scheduled on grids: every step of phase 0 computes each position of
  // its grid once, at the first raster step at which everything it reads is computed (column_program_grids.cc).
  void set_grids(std::vector<Grid> grids);
  bool on_grids() const { return !grids_.empty(); }
  const Grid& grid(int buffer) const { return grids_.empty() ? image_grid_ : grids_.at(buffer); }
  // Multiply-adds per image: executed (each step's live-tap MACs times the positions of its grid it computes;
  // a transposed conv's per phase) and the model's (each conv's live-tap MACs per position times the positions
  // of its output grid, a transposed conv's times its input grid's, as TensorFlow computes them).
  int64_t executed_macs_per_image() const;
  int64_t model_macs_per_image() const;

  // Feeds `image` (n, H, W, C) and writes the head buffer at every position to `head_out`
  // (n, H, W, head channels): the teacher-forced check that the cached path equals a full pass.
  void teacher_forced(const float* image, int64_t n, float* head_out, const Parallel& par) const;
  // Draws n images: levels (n, H, W, C) int32. image_offset numbers the images for the random numbers.
  // margins (optional, n*H*W*C): distance of each draw's uniform to the nearest CDF boundary.
  // on_row (optional) is called by the thread of the first images after each row: rows done so far.
  // step_seconds (optional, num_steps() + 1 entries, zeroed here): thread-seconds spent in each step,
  // the last entry in the draws; a profile for reports (two clock reads per step and position).
  // known (optional, n*H*W*C, image completion): a value >= 0 is that element's given level, written
  // instead of drawn (its margin is +inf); -1 draws it. Checked by checks::known_levels.
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
  // Floats of ring cache per image (all buffers but those only fused epilogues read, plus their scratch), for
  // reports.
  int64_t cache_floats_per_image() const;
  // Multiply-adds per position per image over live taps (convs only), for GFLOP/s reports.
  int64_t macs_per_position() const;
  // The same, counting what the colour passes run: per pass, a conv's segments (destination channel
  // ranges) holding a channel computed in that pass. With per-channel phases an RGB colour-group model
  // executes macs_per_position() (each block once); without them a step of phase p runs in passes 0..p,
  // up to (C + 1)x; a grey model with every step at phase 0 executes it exactly.
  int64_t executed_macs_per_position() const;
  // How the calls that could split a position among threads (fewer images than threads, more than one thread, a
  // policy other than kNever, a program that can split: not one on coarse grids) ran so far: split to the end,
  // split and fell back to one thread (a slow meeting or a busy machine), or kept one thread per image without
  // trying (kAuto's pause after a fallback), or kept one thread per image only to time one thread's pace
  // (timed_alone: kAuto's first such call of a program, then one after every kRetimeCalls splits). For reports:
  // a batch-1 time means little without it (benchmarks/bench_sampler.py records it beside its rounds).
  struct SplitCalls {
    int64_t split = 0, fell_back = 0, skipped = 0, timed_alone = 0;
  };
  SplitCalls split_calls() const {
    return {split_calls_[0].load(), split_calls_[1].load(), split_calls_[2].load(), split_calls_[3].load()};
  }

  // The record and what prepare() derives from it, read by flatten() (flatten.h).
  const std::vector<ProgramStep>& steps() const { return steps_; }
  const std::vector<ConstTensor>& consts() const { return consts_; }
  const std::vector<int64_t>& buffer_channels() const { return buffer_channels_; }
  const HeadSpec& head() const { return head_; }
  bool flattenable() const { return flattenable_; }
  // Rows each buffer's ring cache holds: its own row plus the furthest row above that a live tap reads.
  const std::vector<int>& ring_rows() const {
    prepare();
    return ring_rows_;
  }

  // Epilogue fusion (on unless switched off here): prepare() folds the elementwise steps at a conv's own position
  // (act, binary, concat, gather) into that conv's epilogue, run on the rows its GEMM just wrote, one pass per
  // image (docs/SAMPLER.md, "Fused epilogues"). Off: every step is its own pass, the reference the tests hold the
  // fused path to. Not to be called while another thread samples with the program.
  void set_epilogue_fusion(bool on) {
    fuse_epilogues_ = on;
    prepared_ = false;
  }
  // The conv step whose epilogue computes step k (a contiguous gather read in place counts), or -1.
  int fused_into(int k) const {
    prepare();
    return fused_into_.at(k);
  }
  // How many ops of conv step k's epilogue its GEMM applies in its store (plan_gemm_fusion; 0 for other steps).
  int gemm_fused_ops(int k) const {
    prepare();
    return gemm_fusion_.at(k).ops;
  }
  // Row prefixes (on unless switched off here; docs/SAMPLER.md, "Row prefixes"): at its first position of a row, a
  // conv whose rows above are final by then sums the leading k of its GEMM that read them (the taps with oy < 0) for
  // every position of the row in one GEMM per image (rows = the row's positions), and each position continues from
  // those sums over the taps in its own row. The same float operations in the same order as one sum:
  // bit-identical outputs, and at batch 1 the position's dependent chain is the current row's taps only (keras.io's
  // 3x3: 256 of 640). Off: the reference the tests hold the prefixed path to. Not to be called while another
  // thread samples with the program.
  void set_row_prefixes(bool on) {
    row_prefixes_ = on;
    prepared_ = false;
  }
  // Per segment of conv step k's GEMM: the leading k positions its row prefix sums (empty: the step has none).
  std::vector<int64_t> row_prefix_k(int k) const {
    prepare();
    return row_prefix_.at(k).on ? row_prefix_.at(k).k_pre : std::vector<int64_t>{};
  }
  // The input channels conv step k's carry adds to the next position's prefix (RowPrefix::carry; 0: none).
  int64_t row_carry(int k) const {
    prepare();
    return row_prefix_.at(k).carry;
  }
  // Test seam: ring caches start as NaN instead of 0, so that reading a value no step wrote shows in the output.
  void set_poison_caches(bool on) { poison_caches_ = on; }
  // Test seam: a conv's GEMM reads its A rows in place from the ring where it can (gather_columns; on by default),
  // or off: always from a gathered im2col block (the reference the tests hold the in-place reads to, bit for bit).
  void set_gather_in_place(bool on) { gather_in_place_ = on; }
  // Test seam (column_split.cc): how the position split deals teacher forcing's steps to `members` threads: per
  // step, per member, the channels it computes (a conv's GEMM columns plus its fused ops' channels; a step run
  // whole counts its output channels); empty when the program does not split (on grids).
  std::vector<std::vector<int64_t>> split_work(int members) const;

 private:
  // What one step computes in one colour pass: nothing, all of it, or the conv segments `segs` /
  // the channels [lo, hi) of an elementwise step that hold a channel of that pass's phase.
  struct PassPart {
    bool run = false, whole = true;
    int64_t lo = 0, hi = 0;
    std::vector<int> segs;
  };
  // Splitting a position's work among the threads of a group (column_split.cc).
  struct Share {  // one thread's part of one step in one pass
    bool run = false;    // anything to compute
    bool whole = false;  // the step (its pass part) whole: kinds that do not split, on the group's first thread
    std::vector<int64_t> windows;  // kConv: (segment, c0, c1) triples, GEMM column windows of the segment
    // The same windows cut at panel widths, each with its weights packed densely (gather_plan.h): what run_step
    // runs. Shared by the plan's passes that compute the same window.
    std::vector<std::shared_ptr<const detail::PackedWindow>> packed;
    std::vector<std::pair<int64_t, int64_t>> ranges;  // act, binary, gather: output channel ranges
    // A conv with a fused epilogue: per op of epilogue_[k], the output channel ranges this member computes (the
    // ones whose inputs in the group its own windows and ops wrote; column_split.cc, epilogue groups).
    std::vector<std::vector<std::pair<int64_t, int64_t>>> fused;
  };
  struct StepSplit {
    std::vector<Share> share;  // per member
    // Buffers the step reads that some thread other than the reader may have written at this position: when one
    // of them was written since the last meeting, the threads meet first.
    std::vector<int> unaligned;
    bool others_run = false;  // a member other than the first computes part of it
  };
  struct SplitPlan {
    int members = 1;
    bool ok = false;  // false: the program does not split (a buffer written twice, a step writing its own input)
    std::vector<StepSplit> forced;                  // teacher_forced: every step whole, delayed ones first
    std::vector<StepSplit> delayed;                 // sample: the delayed steps (indexed by step)
    std::vector<std::vector<StepSplit>> pass;       // sample: [step][pass 0..C]
  };
  // One thread of an image group in split mode: its index, the group's barrier, which buffers were written
  // since the last meeting. Every member takes the same steps in the same order, so all decide alike to meet.
  struct Member {
    int index = 0;  // 0: the group's first thread (the draws, the steps that do not split, on_row)
    bool teacher = false;  // teacher_forced's plan (SplitPlan::forced), else sample's
    SpinBarrier* barrier = nullptr;
    const SplitPlan* plan = nullptr;
    // What the group decides together: member 0 writes it before a meeting, every member reads it after.
    struct Group {
      bool stop = false;  // cancelled: every member returns
      bool solo = false;  // the split is slower than one thread (a busy machine): member 0 finishes alone
      bool timed = false;  // kAuto / kAutoSlow: member 0 compares the split's pace with solo_ns (boundary())
      bool always_slow = false;  // PositionSplit::kAutoSlow: the first timed window falls back
      int64_t solo_ns = 0;  // one thread's pace per position, timed by an earlier call (for_each_member)
      int64_t split_positions = 0;                    // positions split so far
      int64_t window_start = 0, window_positions = 0;  // the split's pace in the current window (boundary())
      bool slow_window = false;                         // the last full window was slow (boundary())
    };
    Group* group = nullptr;
    std::vector<uint32_t> written;  // per buffer: the meeting count at its last write
    uint32_t meetings = 1;
    // Since the last meeting, a member other than the first computed part of a step (the same for every member:
    // from the plan). When none did, the first member's draws and image writes race with nobody: no meeting.
    bool others_stepped = false;
    void meet() {
      barrier->wait(index);
      ++meetings;
      others_stepped = false;
    }
    void wrote(int b) { written[b] = meetings; }
    bool unmet(int b) const { return written[b] == meetings; }
  };
  // Ring caches of one contiguous range of images: one thread's, or shared by the members of a group.
  // Ring storage kept between calls: make_slice takes a vector of the size it needs, a slice gives its vectors back
  // when it ends, so a call does not map, fault in and unmap its caches afresh (gated PixelCNN, batch 16: 19 MB
  // per call). At most kMaxFloats are kept; a program's copies share its pool.
  struct RingPool {
    static constexpr int64_t kMaxFloats = int64_t(8) << 20;  // 32 MB
    std::mutex mutex;
    std::vector<std::vector<float>> free;
    int64_t floats = 0;  // held in `free`
    // A vector of `size` floats filled with `value`.
    std::vector<float> take(int64_t size, float value);
    void give_back(std::vector<std::vector<float>>& storage);
  };
  struct Slice {
    Slice() = default;
    Slice(Slice&&) = default;
    Slice& operator=(Slice&&) = default;
    ~Slice() {
      if (pool != nullptr) pool->give_back(storage);
    }
    int64_t img0 = 0, nb = 0;
    std::shared_ptr<RingPool> pool;           // where storage goes back (null in a member sharing another's)
    std::vector<std::vector<float>> storage;  // per buffer: [rows][nb][W][C] (empty in a member sharing another's)
    std::vector<float*> ring;                 // per buffer: the cache (storage's, or the group's)
    std::vector<float> col;                   // im2col of one position for nb images (per thread)
    // gather_columns' copies at one position: a source run (nullptr: zeros) of image 0, its columns in a row.
    struct GatherRun {
      const float* src;
      int64_t col, len;
    };
    std::vector<GatherRun> runs;              // capacity: the most pieces of a plan (no allocation per position)
    // A read in place: each segment's k ranges as ring offsets (capacity: the most any plan needs), where each
    // segment's start, and how many.
    std::vector<KRange> kranges;
    std::vector<const KRange*> seg_ranges;
    std::vector<int> seg_nranges;
    std::vector<int64_t> next;                // per delayed step: the next position it computes (per thread)
    std::vector<float> scratch;  // [nb][scratch_floats_]: buffers only a fused epilogue reads (per thread)
    // Row prefixes: per prefixed step, its sums for the row's positions, [nb][W][cout] from float nb * offset
    // (storage's last vector, or the group's: the members write disjoint columns of one array).
    float* pre = nullptr;
    // A slice of a position split's image groups (for_each_member): its positions' dependent chains are the call's
    // time, so it takes the carry and every row prefix (RowPrefix::chains_only), which shorten them. A slice of
    // images per thread runs tiles of several images; there the carry only splits a GEMM into two calls (keras.io
    // batch 16: 24.3 ms with it, 24.0-24.3 without, alternating processes), and with 4 or more images the chains-only
    // prefixes are left whole too (run_step). Either way a slice keeps its choice for the whole call: the same sums.
    bool split_group = false;
    Member* member = nullptr;    // split mode only
    bool cancelled = false;      // sample() stopped before its last row (the `cancel` flag): a pace timed by this
                                 // call would read fast, so for_each_member keeps none
    float* px(const ColumnProgram& p, int b, int64_t i, int64_t img, int64_t j) {
      const int64_t slot = i % p.ring_rows_[b];
      return ring[b] + ((slot * nb + img) * p.buffer_w_[b] + j) * p.buffer_channels_[b];
    }
  };
  SplitPlan make_split_plan(int members) const;
  // make_split_plan's plan for `members` threads, built once per program and member count (its packed windows
  // copy the weights) and kept until the program is prepared again.
  std::shared_ptr<const SplitPlan> split_plan(int members) const;
  // Split mode's rows (teacher_forced and sample). Row 0 runs on member 0 alone, timed: the pace the split must
  // beat (on a busy machine a meeting can wait for a descheduled thread); not under PositionSplit::kAlways. The
  // others join at row 1's meeting. At
  // every later row start the group meets and takes member 0's `cancelled`. Sets s.member to `mine` while the
  // group works split, nullptr while this thread works alone. Returns false when this thread must skip the row
  // (*stop: and return, cancelled).
  bool start_row(Slice& s, Member* mine, int64_t i, bool cancelled, bool* stop) const;
  // At a position boundary in split mode: member 0 compares the split's pace with its own in row 0 and, when the
  // split is slower (1.25x over two windows of a row's positions in a row; 2 ms behind within one), goes on alone
  // from here (bit-identical: it runs each step whole); then the group meets.
  // Returns false for a member that must leave (the others finish alone).
  bool boundary(Slice& s) const;
  // Step k in split mode: meet if it reads another member's fresh writes, run this member's share (a conv's
  // windows and its fused epilogue's ranges; p: the colour pass, -1 whole), note the writes. Returns the
  // epilogue's nanoseconds when profiling (ns), as run_epilogue.
  int64_t run_split(Slice& s, int k, const StepSplit& sp, int64_t i, int64_t j, const PassPart* part, int p,
                    int64_t* ns) const;
  // Calls body(slice) for one slice per thread (images-per-thread) or, with fewer images than the team's threads,
  // for every member of every image group (split mode); rethrows a member's exception on the caller.
  void for_each_member(int64_t n, const Parallel& par, bool teacher, const std::function<void(Slice&)>& body) const;
  void prepare() const;
  // The steps' parts of colour pass p (0..C) at (i, j); ns as run_steps.
  void run_pass(Slice& s, int64_t i, int64_t j, int p, int64_t* ns = nullptr) const;
  // Ring caches for images [b0, b1); rings (optional): share another slice's (the members of one group).
  Slice make_slice(int64_t b0, int64_t b1, const Slice* rings = nullptr) const;
  // Row prefixes (set_row_prefixes): which convs have one, and a conv's sums for row i, at its first position there,
  // for what that call computes (run_step's part and windows).
  void plan_row_prefixes() const;
  struct RowPrefix;
  void row_prefix(Slice& s, const ProgramStep& st, const RowPrefix& rp, int64_t i, const PassPart* part,
                  const std::vector<std::shared_ptr<const detail::PackedWindow>>* windows) const;
  // Steps of phase >= min_phase at (i, j); ns (optional, one entry per step) accumulates their times.
  void run_steps(Slice& s, int64_t i, int64_t j, int min_phase, int64_t* ns = nullptr) const;
  // Operand o's channels, and its values at (i, j) of the slice's image img.
  int64_t operand_channels(const Operand& o) const {
    return o.is_const ? consts_[o.index].c : buffer_channels_[o.index];
  }
  const float* operand_pixel(Slice& s, const Operand& o, int64_t i, int64_t img, int64_t j) const;
  // windows (optional, kConv): only these packed column windows of the GEMM (split mode).
  void run_step(Slice& s, const ProgramStep& st, int64_t i, int64_t j, const PassPart* part = nullptr,
                const std::vector<std::shared_ptr<const detail::PackedWindow>>* windows = nullptr) const;
  // run_step's conv with a carry (RowPrefix::carry): out / ldd / e / written as run_step sets them up.
  void run_carry_conv(Slice& s, const ProgramStep& st, const RowPrefix& rp, int64_t i, int64_t j, float* out,
                      int64_t ldd, const GemmEpilogue* e, int written,
                      const std::vector<std::shared_ptr<const detail::PackedWindow>>* windows) const;
  void check_buffer(int b, const char* what, const std::string& name) const;
  // add_step's per-kind checks and derived data.
  void add_conv(ProgramStep& st, const ConstTensor* kernel);
  void check_binary(const ProgramStep& st) const;
  void check_concat(const ProgramStep& st) const;
  void check_channel_phases(ProgramStep& st) const;
  // Shifts and delays: every read of a buffer at an offset must find it computed (docs/SEMANTICS.md, "Delays").
  void check_schedule(const ProgramStep& st) const;
  void for_each_read(const ProgramStep& st, const std::function<void(int, int64_t, int64_t)>& fn) const;
  // The delayed steps at raster step t: each computes its positions whose ready step (ready()) is t.
  void run_delayed(Slice& s, int64_t t, int64_t* ns = nullptr) const;
  int64_t first_step() const;  // the first raster step: negative when a step computes ahead
  // The raster step at which a step of delay (dy, dx) computes position (i, j): (i + dy) W + min(j + dx, W).
  int64_t ready(int dy, int dx, int64_t i, int64_t j) const { return (i + dy) * w_ + std::min<int64_t>(j + dx, w_); }
  void set_mixture_head(const HeadSpec& head);  // set_head's checks for a logistic-mixture head
  // Grids (column_program_grids.cc).
  void add_transpose_phases(ProgramStep& st, const ConstTensor& kernel) const;
  void schedule_on_grids(ProgramStep& st) const;  // ready_at / order, or the colour-pass checks
  void for_each_grid_read(const ProgramStep& st, int64_t p, const std::function<void(int, int64_t)>& fn) const;
  int64_t available_at(int buffer, int64_t q) const;  // twice the raster step from which a value is readable
  void run_scheduled(Slice& s, int64_t t, int64_t* ns) const;
  void run_grid_step(Slice& s, const ProgramStep& st, int64_t i, int64_t j) const;
  // A conv's GEMM A rows at one position, reading input buffer `in` around (bi, bj) on its grid, for the slice's
  // images (row img = image img). When every piece lies inside the input and the GEMM writes neither `in` nor
  // buffer `written` (its output, or the fused op's it writes) A is read in place from the ring: row img at the
  // image's stride, each segment's ranges translated to ring offsets (s.kranges); otherwise the im2col rows are
  // gathered into s.col, one copy per run of pieces adjacent in the ring and in the row.
  detail::ARows gather_columns(Slice& s, const detail::GatherPlan& pl, int in, int out, int written, int64_t bi,
                               int64_t bj) const;
  void grid_ring_rows() const;
  void check_grid_head(int buffer) const;  // set_head: on the image grid, ready at its own position
  // plan_epilogues on grids: a and b compute the same grid's positions at the same raster steps (both scheduled
  // with equal ready steps, or both in the colour passes).
  bool same_grid_schedule(const ProgramStep& a, const ProgramStep& b) const;
  // Epilogue fusion. Where a fused op's operand or output is at a pixel: buffer `index`'s ring cache, constant
  // `index`, or (a buffer only the epilogue reads) the slice's epilogue scratch, from float `offset` of an image's
  // block; a ring or constant operand starts at channel `offset` (a contiguous gather read in place). `channels`:
  // the operand's own count (1: broadcast).
  enum class Where { kRing, kConst, kScratch };
  struct FusedLoc {
    Where where = Where::kRing;
    int index = 0;
    int64_t offset = 0, channels = 0;
  };
  struct FusedOp {
    int step = 0;              // the program step it computes
    FusedLoc out;              // where it writes that step's output
    std::vector<FusedLoc> in;  // the step's operands, in order
  };
  // The ops a conv's GEMM applies itself, on its sums in registers (kernels.h GemmEpilogue): its epilogue's first
  // `ops` ops, a bias add of a constant row (+ an activation of the sum) (+ a residual add of a ring buffer), whose
  // intermediate values nothing else reads; the GEMM then writes the last one's output (`out`) instead of the
  // conv's. ops == 0: none.
  struct GemmFusion {
    int ops = 0;
    int bias = -1;  // the constant
    int32_t act = -1;
    float alpha = 0.0f;
    int add = -1;            // the residual's buffer (its ring cache at this position), or -1
    bool add_first = false;  // the residual is the add's first operand
    FusedLoc out;
  };
  void plan_epilogues() const;  // prepare()'s fusion decision, from the program alone
  void plan_gemm_fusion(int k, const std::vector<std::vector<int>>& readers) const;  // plan_epilogues, per conv
  // A fused location's rows at (i, j) for the slice's images: image img's values at the result + img * *step (the
  // ring's image stride, the scratch's, a constant's per-image stride or 0).
  const float* fused_rows(Slice& s, const FusedLoc& l, int64_t i, int64_t j, int64_t* step) const;
  // The epilogue of conv step k at (i, j) for the slice's images; p: the colour pass (-1: whole steps). With ns
  // (profiling) each op is timed into its own step; returns the nanoseconds so spent.
  // share (split mode): only the member's output channel ranges of each op (Share::fused).
  int64_t run_epilogue(Slice& s, int k, int64_t i, int64_t j, int p, int64_t* ns, const Share* share = nullptr) const;

  int h_, w_, c_;
  std::vector<int64_t> buffer_channels_;
  std::vector<ProgramStep> steps_;
  std::vector<ConstTensor> consts_;
  HeadSpec head_;
  bool flattenable_ = false;
  std::vector<std::pair<int, int>> buffer_delay_;  // the delay of the step that writes each buffer ((0, 0): image)
  std::vector<int> delayed_;           // steps with delay != 0, in program order
  std::vector<Grid> grids_;            // per buffer; empty: every buffer on the image's grid
  Grid image_grid_;
  std::vector<int64_t> buffer_w_;      // each buffer's grid width (a ring cache row)
  std::vector<int> writer_;            // the step that writes each buffer (-1: the image)
  mutable std::vector<int> ring_rows_;  // rows cached per buffer
  mutable std::vector<std::vector<PassPart>> pass_parts_;  // [step][pass 0..C]
  mutable std::vector<std::vector<int>> pass_steps_;  // [pass 0..C]: the steps run_pass runs (not fused), in order
  mutable bool prepared_ = false;
  bool fuse_epilogues_ = true;
  bool poison_caches_ = false;
  bool gather_in_place_ = true;
  mutable std::vector<int> fused_into_;                 // per step: the conv whose epilogue computes it, or -1
  mutable std::vector<std::vector<FusedOp>> epilogue_;  // per conv step: its fused ops, in program order
  mutable std::vector<GemmFusion> gemm_fusion_;         // per conv step: the ops its GEMM applies
  mutable std::vector<int64_t> conv_scratch_;  // per step: a fused conv's output offset in the scratch, or -1 (ring)
  mutable int64_t scratch_floats_ = 0;          // epilogue scratch per image
  mutable std::vector<char> ring_elided_;       // per buffer: no ring cache (only a fused epilogue reads it)
  // Row prefixes, per step (plan_row_prefixes).
  struct RowPrefix {
    bool on = false;
    int64_t offset = 0;          // floats per image before this step's [W][cout] block in Slice::pre
    int npieces = 0;             // the plan's leading pieces, all reading rows above (oy < 0) ...
    int64_t cols = 0;            // ... whose im2col columns are [0, cols)
    int64_t min_oy = 0;          // the furthest row above they read
    int64_t jl = 0, jh = 0;      // the positions of a row where all of them lie inside it: [jl, jh)
    std::vector<int64_t> k_pre;  // per segment: its leading k positions in those columns (0: none; a dot segment)
    // The carry (run_step): when the other pieces are the tap left of the position, (0, -1), then the centre, (0, 0),
    // both over input channels [carry_c0, carry_c0 + carry), and every segment sums all three groups in that order,
    // each position also adds the next one's left tap (its own pixel) to that one's prefix sums, its FMAs
    // interleaved with its own centre's in split mode (Kernels::gemm_pair): a position's dependent chain is then the
    // centre's k only. 0: none (the step also runs once per position: phase 0).
    int64_t carry = 0, carry_c0 = 0;
    // Summed only in slices whose positions' dependent chains are their time (split-group slices, and slices of
    // fewer than kChainRows images): a delayed conv's prefix, or one shorter than kMinPrefixK in every segment
    // (plan_row_prefixes says why).
    bool chains_only = false;
  };
  static constexpr int64_t kMinPrefixK = 32;
  static constexpr int64_t kChainRows = 4;  // the fewest rows a register tile needs to reach the FMA rate
  mutable std::vector<RowPrefix> row_prefix_;
  mutable int64_t prefix_floats_ = 0;      // Slice::pre per image
  bool row_prefixes_ = true;
  // PositionSplit::kAuto: calls left that keep one thread per image after a split that fell back (column_split.cc).
  // An atomic a program copy or move takes the value of (programs are returned by value).
  struct SkipCount : std::atomic<int> {
    SkipCount() : std::atomic<int>(0) {}
    SkipCount(const SkipCount& o) : std::atomic<int>(o.load()) {}
    SkipCount& operator=(const SkipCount& o) {
      store(o.load());
      return *this;
    }
  };
  mutable SkipCount split_skips_;
  mutable SkipCount split_backoff_;   // the calls the next fallback skips (0: 1), doubled by each fallback
  mutable SkipCount split_calls_[4];  // SplitCalls' split, fell_back, skipped, timed_alone
  // kAuto: one thread's pace per position (ns), timed by the last call that kept one thread per image, for
  // sampling [0] and teacher forcing [1] (0: none yet), and how many more split calls may use it.
  mutable SkipCount solo_pace_ns_[2];
  mutable SkipCount paced_calls_left_[2];
  std::shared_ptr<RingPool> ring_pool_ = std::make_shared<RingPool>();
  // split_plan's plans. A copy of the program starts with none (the mutex is not copied).
  struct SplitPlans {
    std::mutex mutex;
    std::vector<std::shared_ptr<const SplitPlan>> plans;
    SplitPlans() = default;
    SplitPlans(const SplitPlans&) {}
    SplitPlans& operator=(const SplitPlans&) {
      std::lock_guard<std::mutex> lock(mutex);
      plans.clear();
      return *this;
    }
  };
  mutable SplitPlans split_plans_;
};

}  // namespace pcf

namespace pcf {

// Builds the program from its record: every const input is added (add_const) in index order, then each step
// with its constant operands mapped to those constants. consts[k] is spec input k as a rank-4 array in
// ConstTensor's (n, h, w, c) fields: a constant's own shape, a kernel's (kh, kw, cin, cout). batch > 0 also
// checks that every constant's first dimension is 1 or batch (the executor indexes it per image).
// flattenable: as ColumnProgram's (the GPU executors build with it). Throws std::invalid_argument naming
// the input or the step's spec line.
ColumnProgram build_from_spec(const ProgramSpec& spec, const std::vector<ConstTensor>& consts, int64_t batch = 0,
                              bool flattenable = false);
// The same from the spec text (program_spec.h).
ColumnProgram build_from_spec(const std::string& spec, const std::vector<ConstTensor>& consts, int64_t batch = 0,
                              bool flattenable = false);

}  // namespace pcf
