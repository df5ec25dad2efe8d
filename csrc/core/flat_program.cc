// Core (framework-free C++17): the FlatProgram tables' layout and views, and the host emulation of the CUDA
// executor's loops (tests only: the GPU's arithmetic checked on machines without one). flatten.cc builds
// the tables from a ColumnProgram.
#include "flat_program.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "checks.h"

namespace pcf {

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
  v.head_components = head_components;
  v.head_mixture_layout = head_mixture_layout;
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
  if (err.empty() && known != nullptr) err = checks::known_levels("sample_emulated", known, n * h * w * c, draw_levels());
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
