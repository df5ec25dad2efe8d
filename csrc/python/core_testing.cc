// Binding (pybind11): pixelcnn_fast._core.testing -- the C++ core's test seams, apart from the product in
// core_module.cc: the CUDA kernels' per-element arithmetic and the GPU sampler's loops run on the host (the
// CPU tests check the GPU's arithmetic with these on machines without one), the sampler's Philox and
// inverse-CDF draws (pixelcnn_fast.rng and the tests' twins are checked against them) and the core's live-tap
// analysis. Tests, benchmarks and scripts import it explicitly: `from pixelcnn_fast._core import testing`.
// Thin adapters like the product's: the same argument checks (core_args.h), no algorithm here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <time.h>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../core/checks.h"
#include "../core/column_program.h"
#include "../core/elementwise.h"
#include "../core/flat_program.h"
#include "../core/flatten.h"
#include "../core/gather_plan.h"
#include "../core/kernels.h"
#include "../core/masked_conv.h"
#include "../core/masked_conv_element.h"
#include "../core/philox.h"
#include "../core/program.h"
#include "../core/tapset.h"
#include "../core/team.h"
#include "core_args.h"

namespace pcf_core_binding {

namespace {

// ------------------------------------------------------------------ sampler randomness (core/philox.h)

using pcf_binding::int_arg;
using pcf_binding::temperature_arg;

float rng_uniform(const py::object& seed, const py::object& image, const py::object& position,
                  const py::object& channel) {
  const char* fn = "philox_uniform";
  return pcf::uniform01(int_arg(seed, fn, "seed", 64), static_cast<uint32_t>(int_arg(image, fn, "image", 32)),
                        static_cast<uint32_t>(int_arg(position, fn, "position", 32)),
                        static_cast<uint32_t>(int_arg(channel, fn, "channel", 32)));
}

py::tuple rng_block(const py::sequence& counter, const py::sequence& key) {
  const char* fn = "philox4x32_10";
  if (counter.size() != 4 || key.size() != 2)
    throw py::value_error(std::string(fn) + ": counter must hold 4 words and key 2, got " +
                          std::to_string(counter.size()) + " and " + std::to_string(key.size()));
  pcf::PhiloxBlock ctr;
  for (int i = 0; i < 4; ++i) ctr.w[i] = static_cast<uint32_t>(int_arg(counter[i], fn, "counter word", 32));
  const pcf::PhiloxBlock out = pcf::philox4x32_10(ctr, static_cast<uint32_t>(int_arg(key[0], fn, "key word", 32)),
                                                  static_cast<uint32_t>(int_arg(key[1], fn, "key word", 32)));
  return py::make_tuple(out.w[0], out.w[1], out.w[2], out.w[3]);
}

py::array_t<float> rng_uniform_grid(const py::object& seed_obj, const py::object& n_obj, const py::object& h_obj,
                                    const py::object& w_obj, const py::object& c_obj, const py::object& offset_obj) {
  const char* fn = "philox_uniform_grid";
  const uint64_t seed = int_arg(seed_obj, fn, "seed", 64);
  const uint64_t n = int_arg(n_obj, fn, "n", 32), h = int_arg(h_obj, fn, "h", 32), w = int_arg(w_obj, fn, "w", 32),
                 c = int_arg(c_obj, fn, "c", 32), offset = int_arg(offset_obj, fn, "image_offset", 32);
  // Every counter word must fit 32 bits: image < 2**32, position = i * w + j < 2**32.
  pcf_binding::raise_if_bad(pcf::checks::image_offset(fn, static_cast<int64_t>(offset), static_cast<int64_t>(n)));
  if (h * w > (1ull << 32))
    throw py::value_error(std::string(fn) + ": h * w must be <= 2**32 (positions are 32-bit), got " +
                          std::to_string(h) + " * " + std::to_string(w));
  py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w),
                          static_cast<py::ssize_t>(c)});
  float* u = out.mutable_data();
  {
    py::gil_scoped_release release;
    for (uint64_t b = 0; b < n; ++b)
      for (uint64_t p = 0; p < h * w; ++p)
        for (uint64_t ch = 0; ch < c; ++ch)
          *u++ = pcf::uniform01(seed, static_cast<uint32_t>(offset + b), static_cast<uint32_t>(p),
                                static_cast<uint32_t>(ch));
  }
  return out;
}

py::object rng_draw_levels(const py::object& values_obj, const std::string& head_name, const py::object& temperature,
                           const py::object& u_obj, bool return_margin, const std::string& isa) {
  const char* fn = "draw_levels";
  const float* values = checked_input(values_obj, fn, "values", 2);
  const float* u = checked_input(u_obj, fn, "u", 1);
  py::array va = py::reinterpret_borrow<py::array>(values_obj), ua = py::reinterpret_borrow<py::array>(u_obj);
  pcf::DrawHead head;
  if (!pcf::parse_name(head_name, &head)) {  // program.h's head names, as the spec's `head kind=`
    // The heads this function draws: all but the mixture, which has draw_logistic_mixture.
    std::string names;
    const auto& table = pcf::name_table<pcf::DrawHead>();
    const size_t count = table.size() - 1;
    for (size_t k = 0; k < count; ++k)
      names += (k == 0 ? "'" : k + 1 == count ? " or '" : ", '") + std::string(table[k].first) + "'";
    throw py::value_error(std::string(fn) + ": head must be " + names + ", got '" + head_name + "'");
  }
  if (head == pcf::DrawHead::kLogisticMixture)
    throw py::value_error(std::string(fn) + ": head 'logistic_mixture' draws from a whole pixel's head and the "
                          "channels drawn before it: use draw_logistic_mixture");
  const py::ssize_t m = va.shape(0), n = va.shape(1);
  if (head == pcf::DrawHead::kBernoulli && n != 1)
    throw py::value_error(std::string(fn) + ": values must have shape (M, 1) for head 'bernoulli' (one logit per "
                          "draw), got " + shape_str(va));
  if (n < 1 || n > INT32_MAX)
    throw py::value_error(std::string(fn) + ": values must have shape (M, N) with 1 <= N < 2**31 levels, got " +
                          shape_str(va));
  if (ua.shape(0) != m)
    throw py::value_error(std::string(fn) + ": u must have shape (" + std::to_string(m) + ",) (one uniform per row "
                          "of values), got " + shape_str(ua));
  for (py::ssize_t i = 0; i < m; ++i)
    if (!(u[i] >= 0.0f && u[i] < 1.0f))
      throw py::value_error(std::string(fn) + ": u must lie in [0, 1), got u[" + std::to_string(i) + "] = " +
                            std::string(py::repr(py::float_(u[i]))));
  const float t = temperature_arg(temperature, fn);
  // isa: "scalar" (philox.h's draw) or a build whose draw_logits the CPU executor uses for the logits head.
  const pcf::Kernels* kern = isa == "scalar" ? nullptr : pcf::kernels_by_name(isa.c_str());
  if (isa != "scalar" && (kern == nullptr || head != pcf::DrawHead::kLogits || n > pcf::kDrawLogitsMaxLevels))
    throw py::value_error(std::string(fn) + ": isa must be 'scalar', or for head 'logits' with N <= " +
                          std::to_string(pcf::kDrawLogitsMaxLevels) + " a build this CPU runs, got '" + isa +
                          "' for head '" + head_name + "' and N = " + std::to_string(n));
  py::array_t<int32_t> levels(m);
  py::array_t<float> margins(return_margin ? m : 0);
  int32_t* lp = levels.mutable_data();
  float* mp = return_margin ? margins.mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    for (py::ssize_t i = 0; i < m; ++i)
      lp[i] = kern != nullptr ? kern->draw_logits(values + i * n, static_cast<int>(n), t, u[i], mp ? mp + i : nullptr)
                              : pcf::draw_level(head, values + i * n, static_cast<int>(n), 1, t, u[i],
                                                mp ? mp + i : nullptr);
  }
  if (return_margin) return py::make_tuple(levels, margins);
  return levels;
}

// draw_logistic_mixture of core/philox.h on M pixels: values (M, 3K or 10K) float32, drawn (M, 2) int32 (the
// levels of R and G at the pixel, read for RGB channels 1 and 2), u_component and u (M,) float32.
py::object rng_draw_logistic_mixture(const py::object& values_obj, int components, int channel,
                                     const py::object& drawn_obj, int levels, const py::object& temperature,
                                     const py::object& u_component_obj, const py::object& u_obj, bool return_margin,
                                     const std::string& layout) {
  const char* fn = "draw_logistic_mixture";
  if (layout != "pixelcnn_pp" && layout != "tfp")
    throw py::value_error(std::string(fn) + ": layout must be 'pixelcnn_pp' or 'tfp', got '" + layout + "'");
  const pcf::MixtureLayout lay = layout == "tfp" ? pcf::MixtureLayout::kTfp : pcf::MixtureLayout::kPixelCnnPP;
  const float* values = checked_input(values_obj, fn, "values", 2);
  const float* uc = checked_input(u_component_obj, fn, "u_component", 1);
  const float* u = checked_input(u_obj, fn, "u", 1);
  py::array va = py::reinterpret_borrow<py::array>(values_obj);
  const py::ssize_t m = va.shape(0), n = va.shape(1);
  if (components < 1 || (n != pcf::mixture_head_values(components, 1) && n != pcf::mixture_head_values(components, 3)))
    throw py::value_error(std::string(fn) + ": values must have shape (M, 3K) (grey) or (M, 10K) (RGB) for K = "
                          "components = " + std::to_string(components) + ", got " + shape_str(va));
  const int channels = n == pcf::mixture_head_values(components, 1) ? 1 : 3;
  if (channel < 0 || channel >= channels)
    throw py::value_error(std::string(fn) + ": channel must lie in [0, " + std::to_string(channels) + "), got " +
                          std::to_string(channel));
  if (levels < 2) throw py::value_error(std::string(fn) + ": levels must be >= 2, got " + std::to_string(levels));
  if (!py::isinstance<py::array_t<int32_t>>(drawn_obj))
    throw py::type_error(std::string(fn) + ": drawn must be an int32 numpy.ndarray of shape (M, 2)");
  py::array da = py::reinterpret_borrow<py::array>(drawn_obj);
  if (!da.dtype().is(py::dtype::of<int32_t>()) || da.ndim() != 2 || da.shape(0) != m || da.shape(1) != 2 ||
      !(da.flags() & py::array::c_style))
    throw py::value_error(std::string(fn) + ": drawn must be int32 C-contiguous of shape (" + std::to_string(m) +
                          ", 2), got " + std::string(py::str(da.dtype())) + " " + shape_str(da));
  const int32_t* drawn = static_cast<const int32_t*>(da.data());
  for (py::ssize_t i = 0; i < 2 * m; ++i)
    if (drawn[i] < 0 || drawn[i] >= levels)
      throw py::value_error(std::string(fn) + ": drawn levels must lie in [0, " + std::to_string(levels) + "), got " +
                            std::to_string(drawn[i]));
  py::array ua = py::reinterpret_borrow<py::array>(u_obj), uca = py::reinterpret_borrow<py::array>(u_component_obj);
  if (ua.shape(0) != m || uca.shape(0) != m)
    throw py::value_error(std::string(fn) + ": u and u_component must have shape (" + std::to_string(m) + ",), got " +
                          shape_str(ua) + " and " + shape_str(uca));
  for (py::ssize_t i = 0; i < m; ++i)
    if (!(u[i] >= 0.0f && u[i] < 1.0f) || !(uc[i] >= 0.0f && uc[i] < 1.0f))
      throw py::value_error(std::string(fn) + ": u and u_component must lie in [0, 1), got " +
                            std::string(py::repr(py::float_(u[i]))) + " and " +
                            std::string(py::repr(py::float_(uc[i]))) + " at row " + std::to_string(i));
  const float t = temperature_arg(temperature, fn);
  py::array_t<int32_t> out(m);
  py::array_t<float> margins(return_margin ? m : 0);
  int32_t* lp = out.mutable_data();
  float* mp = return_margin ? margins.mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    for (py::ssize_t i = 0; i < m; ++i) {
      const int prior[2] = {drawn[2 * i], drawn[2 * i + 1]};
      lp[i] = pcf::draw_logistic_mixture(values + i * n, components, channels, channel, prior, levels, t, uc[i], u[i],
                                         mp ? mp + i : nullptr, lay);
    }
  }
  if (return_margin) return py::make_tuple(out, margins);
  return out;
}

py::float_ rng_mixture_component_uniform(const py::object& seed, const py::object& image, const py::object& position) {
  const char* fn = "mixture_component_uniform";
  return py::float_(pcf::mixture_component_uniform(int_arg(seed, fn, "seed", 64),
                                                   static_cast<uint32_t>(int_arg(image, fn, "image", 32)),
                                                   static_cast<uint32_t>(int_arg(position, fn, "position", 32))));
}

// ------------------------------------------------------------------ the GPU sampler's loops on the host
// A program built flattenable plus its flat tables (flatten.h), flattened once: the CUDA executor's loops
// (core/flat_program.h) run on the host, so the CPU tests check the GPU's arithmetic on machines without one.
struct EmulatedGpuProgram {
  pcf::ColumnProgram program;
  pcf::FlatProgram flat;
};

void bind_emulated_gpu_program(py::module_& m) {
  py::class_<EmulatedGpuProgram>(m, "EmulatedGpuProgram",
                                 "The GPU sampler's flat program with its loops run on the host (tests only; slow, "
                                 "not a backend).")
      .def_static("from_spec", [](const std::string& spec, const std::vector<py::object>& arrays, int64_t batch) {
        const char* fn = "EmulatedGpuProgram.from_spec";
        pcf::ColumnProgram program = pcf_binding::program_from_spec(spec, arrays, batch, fn, /*flattenable=*/true);
        pcf::FlatProgram flat = pcf::flatten(program);
        return new EmulatedGpuProgram{std::move(program), std::move(flat)};
      }, py::arg("spec"), py::arg("arrays"), py::arg("batch") = 0,
         "Builds and flattens a program as _cuda.ColumnProgram.from_spec does, without a device.")
      .def("sample_emulated", [](const EmulatedGpuProgram& e, const py::object& n, const py::object& seed,
                                 const py::object& temperature, const py::object& image_offset,
                                 int images_per_block, const py::object& known_obj) {
        const char* fn = "sample_emulated";
        const pcf::ColumnProgram& p = e.program;
        const SampleArgs a = program_sample_args(p, fn, n, seed, temperature, image_offset);
        const int32_t* known = checked_known(known_obj, fn, a.n, p.height(), p.width(), p.channels());
        const std::vector<py::ssize_t> shape = image_batch_shape(p, a.n);
        py::array_t<int32_t> levels(shape);
        py::array_t<float> margins(shape);
        int32_t* lv = levels.mutable_data();
        float* mg = margins.mutable_data();
        try {
          py::gil_scoped_release release;
          e.flat.sample_emulated(a.n, a.seed, a.temperature, a.image_offset, images_per_block, lv, mg, known);
        } catch (const std::invalid_argument& err) {
          throw py::value_error(err.what());
        }
        return py::make_tuple(levels, margins);
      }, py::arg("n"), py::arg("seed"), py::arg("temperature"), py::arg("image_offset") = 0,
         py::arg("images_per_block") = 1, py::arg("known") = py::none(),
         "(levels, margins) drawn by the CUDA sampler's loops run on the host, images_per_block images per "
         "emulated block; known as for _core.ColumnProgram.sample.")
      .def("teacher_forced_emulated", [](const EmulatedGpuProgram& e, const py::object& image, int images_per_block) {
        const char* fn = "EmulatedGpuProgram.teacher_forced_emulated";
        const pcf::ColumnProgram& p = e.program;
        const float* x = checked_input(image, fn, "image", 4);
        py::array a = py::reinterpret_borrow<py::array>(image);
        check_image_shape(p, a, fn);
        check_teacher_forced_batch(p, a, fn);
        py::array_t<float> out({a.shape(0), a.shape(1), a.shape(2), static_cast<py::ssize_t>(p.head_channels())});
        float* o = out.mutable_data();
        try {
          py::gil_scoped_release release;
          e.flat.teacher_forced_emulated(x, a.shape(0), images_per_block, o);
        } catch (const std::invalid_argument& err) {
          throw py::value_error(err.what());
        }
        return out;
      }, py::arg("image"), py::arg("images_per_block") = 1,
         "Head values with `image` fed in, by the CUDA executor's loops run on the host.")
      .def("gpu_step_count", [](const EmulatedGpuProgram& e) {
        return py::make_tuple(static_cast<int>(e.flat.steps.size()), e.flat.fused_steps, e.flat.dropped_steps);
      }, "(steps the GPU executor runs per pass, program steps fused into conv epilogues, steps dropped because "
         "nothing reads their output).");
}

// ------------------------------------------------------------------ elementwise rows (core/kernels.h)

// The microkernel build called `isa` ("avx512", "avx2", "generic"; any this CPU runs), or nullptr for "scalar":
// elementwise.h's reference functions, one element at a time.
const pcf::Kernels* row_kernels(const std::string& isa, const char* fn) {
  if (isa == "scalar") return nullptr;
  const pcf::Kernels* k = pcf::kernels_by_name(isa.c_str());
  if (k == nullptr)
    throw py::value_error(std::string(fn) + ": isa must be 'scalar' or a build this CPU runs (" +
                          "_core.supported_isas()), got '" + isa + "'");
  return k;
}

template <typename E>
E fn_arg(const std::string& name, const char* fn) {
  E e;
  if (!pcf::parse_name(name, &e))
    throw py::value_error(std::string(fn) + ": fn must be one of " + pcf::name_list<E>() + ", got '" + name + "'");
  return e;
}

// The rank of an elementwise row operand: 1-D (one row) or 2-D (rows of one length).
int row_operand_rank(const py::object& obj) {
  return py::isinstance<py::array>(obj) ? static_cast<int>(py::reinterpret_borrow<py::array>(obj).ndim()) : 1;
}

// x: 1-D, or 2-D (R, L): one act_rows call over its R rows (row stride L) writing the first n of each row (n = L by
// default); the other elements of y are NaN (a write past n shows).
py::array_t<float> act_row(const std::string& isa, const std::string& fn_name, const py::object& x_obj, float alpha,
                           int64_t n) {
  const char* fn = "act_row";
  const pcf::Kernels* k = row_kernels(isa, fn);
  const int32_t f = static_cast<int32_t>(fn_arg<pcf::ActFn>(fn_name, fn));
  const int rank = row_operand_rank(x_obj) == 2 ? 2 : 1;
  const float* x = checked_input(x_obj, fn, "x", rank);
  py::array xa = py::reinterpret_borrow<py::array>(x_obj);
  const int64_t rows = rank == 2 ? xa.shape(0) : 1, len = xa.shape(rank - 1);
  if (n < 0) n = len;
  if (n > len)
    throw py::value_error(std::string(fn) + ": n = " + std::to_string(n) + " exceeds the row length " +
                          std::to_string(len));
  py::array_t<float> y(std::vector<py::ssize_t>(xa.shape(), xa.shape() + rank));
  float* out = y.mutable_data();
  std::fill(out, out + rows * len, NAN);
  if (k != nullptr)
    k->act_rows(f, alpha, x, len, out, len, n, rows);
  else
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i) out[r * len + i] = pcf::elementwise::act(f, x[r * len + i], alpha);
  return y;
}

// a, b: each 1-D (one row, read for every output row: row step 0) or 2-D (R, L) (row step L); a row of length 1 is
// one value broadcast (stride 0), else the length is the output's. One binary_rows call; y is (R, n), or (n,) when
// both are 1-D.
py::array_t<float> binary_row(const std::string& isa, const std::string& fn_name, const py::object& a_obj,
                              const py::object& b_obj) {
  const char* fn = "binary_row";
  const pcf::Kernels* k = row_kernels(isa, fn);
  const int32_t f = static_cast<int32_t>(fn_arg<pcf::BinaryFn>(fn_name, fn));
  const int ra = row_operand_rank(a_obj) == 2 ? 2 : 1, rb = row_operand_rank(b_obj) == 2 ? 2 : 1;
  const float* a = checked_input(a_obj, fn, "a", ra);
  const float* b = checked_input(b_obj, fn, "b", rb);
  py::array aa = py::reinterpret_borrow<py::array>(a_obj), ba = py::reinterpret_borrow<py::array>(b_obj);
  const int64_t na = aa.shape(ra - 1), nb = ba.shape(rb - 1);
  const int64_t rows_a = ra == 2 ? aa.shape(0) : 1, rows_b = rb == 2 ? ba.shape(0) : 1;
  if (na < 1 || nb < 1 || (na != nb && na != 1 && nb != 1))
    throw py::value_error(std::string(fn) + ": a and b must have the same length or one of them length 1, got " +
                          std::to_string(na) + " and " + std::to_string(nb));
  if (ra == 2 && rb == 2 && rows_a != rows_b)
    throw py::value_error(std::string(fn) + ": a and b have " + std::to_string(rows_a) + " and " +
                          std::to_string(rows_b) + " rows");
  const int64_t n = std::max(na, nb), rows = std::max(rows_a, rows_b);
  const pcf::BinaryRows args{f, a, na > 1 ? 1 : 0, ra == 2 ? na : 0, b, nb > 1 ? 1 : 0, rb == 2 ? nb : 0,
                             nullptr, n, n, rows};
  py::array_t<float> y = ra == 2 || rb == 2 ? py::array_t<float>({rows, n}) : py::array_t<float>(n);
  float* out = y.mutable_data();
  if (k != nullptr) {
    pcf::BinaryRows call = args;
    call.y = out;
    k->binary_rows(call);
  } else {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i)
        out[r * n + i] =
            pcf::elementwise::binary(f, a[r * args.arow + i * args.astride], b[r * args.brow + i * args.bstride]);
  }
  return y;
}

// C = A[:, ranges] @ B through the build's `gemm` microkernel (core/kernels.h), B packed here into the build's
// panels as the gather plans pack it, or (window) as one thread's column window of the batch-1 split
// (gather_plan.h PackedWindow: ldb = N rounded up to gemm_window_unit when N <= the panel; wider, whole panels). C is returned with `pad`
// extra columns (ldc = N + pad) and every entry poisoned with NaN first, so a test sees both a missed output and a
// write past column N. `repeats` > 1 runs the product that many times and reports this thread's CPU seconds per
// call (benchmarks/kernel_rates.py; packing excluded), cycling through `copies` packed copies of B, so that B
// comes from L1, L2 or L3 as its footprint says (the sampler streams each step's weights once per position).
py::tuple gemm(const std::string& isa, const py::object& a_obj, const py::object& b_obj, const py::object& ranges_obj,
               int64_t pad, int64_t repeats, bool window, int64_t copies) {
  const char* fn = "gemm";
  const pcf::Kernels* k = row_kernels(isa, fn);
  if (k == nullptr) throw py::value_error(std::string(fn) + ": isa must name a microkernel build, got 'scalar'");
  const float* a = checked_input(a_obj, fn, "a", 2);
  const float* b = checked_input(b_obj, fn, "b", 2);
  const py::array aa = py::reinterpret_borrow<py::array>(a_obj), ba = py::reinterpret_borrow<py::array>(b_obj);
  const int64_t m = aa.shape(0), lda = aa.shape(1), kk = ba.shape(0), n = ba.shape(1);
  std::vector<pcf::KRange> ranges;
  if (ranges_obj.is_none()) {
    ranges.push_back({0, lda});
  } else {
    for (const py::handle& r : py::reinterpret_borrow<py::sequence>(ranges_obj)) {
      const auto pair = r.cast<std::pair<int64_t, int64_t>>();
      if (pair.first < 0 || pair.second < pair.first || pair.second > lda)
        throw py::value_error(std::string(fn) + ": each range must satisfy 0 <= begin <= end <= a.shape[1] = " +
                              std::to_string(lda) + ", got (" + std::to_string(pair.first) + ", " +
                              std::to_string(pair.second) + ")");
      ranges.push_back({pair.first, pair.second});
    }
  }
  int64_t total = 0;
  for (const pcf::KRange& r : ranges) total += r.end - r.begin;
  if (total != kk)
    throw py::value_error(std::string(fn) + ": b must have as many rows as the ranges hold columns of a (" +
                          std::to_string(total) + "), got shape " + shape_str(ba));
  if (m < 1 || n < 1 || pad < 0 || repeats < 1 || copies < 1)
    throw py::value_error(std::string(fn) +
                          ": need a.shape[0] >= 1, b.shape[1] >= 1, pad >= 0, repeats >= 1, copies >= 1");
  const int64_t unit = pcf::detail::gemm_window_unit(*k);
  window = window && n <= k->panel;  // a wider window is whole panels, as the gather plans pack them
  const int64_t panel = window ? (n + unit - 1) / unit * unit : k->panel, panels = (n + panel - 1) / panel;
  const int64_t packed = panels * kk * panel;
  std::vector<float> bpack(static_cast<size_t>(packed * copies), 0.0f);
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t r = 0; r < kk; ++r)
      for (int64_t j = 0; j < panel && p * panel + j < n; ++j) bpack[(p * kk + r) * panel + j] = b[r * n + p * panel + j];
  for (int64_t i = 1; i < copies; ++i) std::copy(bpack.begin(), bpack.begin() + packed, bpack.begin() + i * packed);
  const int64_t ldc = n + pad;
  py::array_t<float> c({m, ldc});
  float* out = c.mutable_data();
  std::fill(out, out + m * ldc, std::numeric_limits<float>::quiet_NaN());
  pcf::GemmArgs args{a, lda, m, ranges.data(), static_cast<int>(ranges.size()), bpack.data(), n, out, ldc};
  if (window) args.ldb = panel;
  // This thread's CPU time, not the wall clock: on a shared machine a descheduled run would read slow.
  auto thread_seconds = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  double seconds;
  {
    py::gil_scoped_release release;
    const double t0 = thread_seconds();
    for (int64_t i = 0; i < repeats; ++i) {
      args.bpack = bpack.data() + (i % copies) * packed;
      k->gemm(args);
    }
    seconds = (thread_seconds() - t0) / repeats;
  }
  return py::make_tuple(c, seconds);
}

// (live taps, live MACs per pixel, dense MACs per pixel) of a TapSet, as the tap-analysis seams return it.
py::tuple tap_summary(const pcf::TapSet& ts) {
  std::vector<std::pair<int, int>> taps;
  for (int t = 0; t < ts.num_taps(); ++t) taps.push_back({ts.ky[t], ts.kx[t]});
  return py::make_tuple(taps, ts.live_macs_per_pixel(), ts.dense_macs_per_pixel());
}

}  // namespace

void bind_testing(py::module_& t) {
  t.doc() = "Test seams of the C++ core (not the product; import explicitly: from pixelcnn_fast._core import "
            "testing): the CUDA kernels' arithmetic and sampler loops run on the host, the core's Philox and "
            "inverse-CDF draws, its live-tap analysis. Slow where it emulates.";
  // The CUDA kernels' per-element arithmetic (core/masked_conv_element.h) on the host: the CPU tests check
  // the GPU's index math and channel ranges with these.
  t.def("masked_conv2d_forward_elementwise", &forward<pcf::masked_conv2d_forward_elementwise>, py::arg("x"),
        py::arg("kernel"), py::arg("mask_type"), py::arg("color_groups") = 1,
        py::arg("dilation") = py::make_tuple(1, 1), py::arg("padding") = "same", py::arg("out") = py::none(),
        "masked_conv2d_forward computed one element at a time as a CUDA thread does.");
  t.def("masked_conv2d_backprop_input_elementwise", &backprop_input<pcf::masked_conv2d_backprop_input_elementwise>,
        py::arg("dy"), py::arg("kernel"), py::arg("input_hw"), py::arg("mask_type"), py::arg("color_groups") = 1,
        py::arg("dilation") = py::make_tuple(1, 1), py::arg("padding") = "same", py::arg("out") = py::none(),
        "masked_conv2d_backprop_input computed one element at a time as a CUDA thread does.");
  t.def("masked_conv2d_backprop_filter_elementwise",
        &backprop_filter<pcf::masked_conv2d_backprop_filter_elementwise>, py::arg("x"), py::arg("dy"),
        py::arg("kernel_hw"), py::arg("mask_type"), py::arg("color_groups") = 1,
        py::arg("dilation") = py::make_tuple(1, 1), py::arg("padding") = "same", py::arg("out") = py::none(),
        "masked_conv2d_backprop_filter computed as the CUDA kernels' partial sums do.");
  bind_emulated_gpu_program(t);
  // The CPU executor's epilogue fusion (core/column_program.h): off gives the unfused reference executor.
  t.def("set_epilogue_fusion", [](pcf::ColumnProgram& p, bool on) { p.set_epilogue_fusion(on); }, py::arg("program"),
        py::arg("on"), "Switches a _core.ColumnProgram's epilogue fusion on (its default) or off (every step its own "
        "pass). Not while another thread samples with it.");
  t.def("fused_into", [](const pcf::ColumnProgram& p) {
    std::vector<int> out;
    for (int k = 0; k < p.num_steps(); ++k) out.push_back(p.fused_into(k));
    return out;
  }, py::arg("program"), "Per step of a _core.ColumnProgram: the conv step whose epilogue computes it, or -1.");
  t.def("gemm_fused_ops", [](const pcf::ColumnProgram& p) {
    std::vector<int> out;
    for (int k = 0; k < p.num_steps(); ++k) out.push_back(p.gemm_fused_ops(k));
    return out;
  }, py::arg("program"), "Per step of a _core.ColumnProgram: how many ops of its fused epilogue a conv's GEMM "
     "applies in its store (a bias add, then an activation), else 0.");
  t.def("split_work", [](const pcf::ColumnProgram& p, int members) { return p.split_work(members); },
        py::arg("program"), py::arg("members"),
        "Per step of a _core.ColumnProgram, per member of a `members`-thread position split (teacher forcing's "
        "plan): the channels it computes (a conv's GEMM columns plus its fused ops' channels); [] when the program "
        "does not split (on grids).");
  t.def("set_gather_in_place", [](pcf::ColumnProgram& p, bool on) { p.set_gather_in_place(on); },
        py::arg("program"), py::arg("on"),
        "A conv's GEMM reads its input in place from the ring where every tap is inside the image (on, the default) "
        "or always from a gathered im2col block (off, the reference). Not while another thread samples with it.");
  t.def("set_row_prefixes", [](pcf::ColumnProgram& p, bool on) { p.set_row_prefixes(on); }, py::arg("program"),
        py::arg("on"),
        "A conv's sums over the taps in rows above are computed for a whole row at its start and each position goes "
        "on from them (on, the default), or each position computes its whole sum (off, the reference). Not while "
        "another thread samples with it.");
  t.def("row_prefix_k", [](const pcf::ColumnProgram& p) {
    std::vector<std::vector<int64_t>> out;
    for (int k = 0; k < p.num_steps(); ++k) out.push_back(p.row_prefix_k(k));
    return out;
  }, py::arg("program"), "Per step of a _core.ColumnProgram: per segment of a conv's GEMM, the leading k positions "
     "its row prefix sums (0: none for that segment); [] for a step without a row prefix.");
  t.def("row_carry", [](const pcf::ColumnProgram& p) {
    std::vector<int64_t> out;
    for (int k = 0; k < p.num_steps(); ++k) out.push_back(p.row_carry(k));
    return out;
  }, py::arg("program"), "Per step of a _core.ColumnProgram: the input channels a conv's carry adds to the next "
     "position's prefix sums (its tap left of the position, which reads the centre's pixel), else 0.");
  t.def("set_poison_caches", [](pcf::ColumnProgram& p, bool on) { p.set_poison_caches(on); }, py::arg("program"),
        py::arg("on"), "Ring caches of later calls start as NaN (on) instead of 0: a read of a value never written "
        "shows in the output.");
  // The column program's vectorised elementwise rows per ISA against elementwise.h's reference functions.
  t.def("gemm", &gemm, py::arg("isa"), py::arg("a"), py::arg("b"), py::arg("ranges") = py::none(),
        py::arg("pad") = 3, py::arg("repeats") = 1, py::arg("window") = false, py::arg("copies") = 1,
        "(C, thread CPU seconds per call): A[:, ranges] @ B by the build's gemm microkernel; C has `pad` NaN-poisoned columns "
        "past N. window: B packed as one thread's column window of the batch-1 split (N <= the panel); copies: the "
        "timed calls cycle through that many copies of packed B (its footprint: from L1, L2 or L3).");
  t.def("act_row", &act_row, py::arg("isa"), py::arg("fn"), py::arg("x"), py::arg("alpha") = 0.2f,
        py::arg("n") = -1,
        "float32 1-D or 2-D (rows): the activation `fn` (an ActFn name) of each x, by the microkernel build `isa`'s "
        "vectorised rows ('avx512', 'avx2', 'generic'; one act_rows call over every row) or by elementwise.h's scalar "
        "reference ('scalar'); only the first n of each row (default all), the rest NaN.");
  t.def("binary_row", &binary_row, py::arg("isa"), py::arg("fn"), py::arg("a"), py::arg("b"),
        "float32: fn(a, b) (a BinaryFn name) elementwise, a length-1 row broadcast, a 1-D operand read for every row "
        "of a 2-D one (one binary_rows call); isa as act_row.");
  // The core's tap analysis (tapset.h), which every conv path and the sampler's executor build on.
  t.def("kernel_live_taps", [](const py::object& k_obj) {
    const float* k = checked_input(k_obj, "kernel_live_taps", "kernel", 4);
    py::array ka = py::reinterpret_borrow<py::array>(k_obj);
    return tap_summary(pcf::TapSet::from_kernel(k, static_cast<int>(ka.shape(0)), static_cast<int>(ka.shape(1)),
                                                ka.shape(2), ka.shape(3)));
  }, py::arg("kernel"), "(live taps, MACs per pixel read, dense MACs per pixel) of a kernel's non-zero structure.");
  t.def("live_taps", [](int kh, int kw, const std::string& mask_type, int color_groups, int64_t cin, int64_t cout) {
    std::string err = pcf::check_mask_args(kh, kw, cin, cin, cout, mask_type, color_groups, 1, 1, "same");
    if (!err.empty()) throw py::value_error("live_taps: " + err);
    return tap_summary(
        pcf::TapSet::from_mask(kh, kw, cin, cout, pcf::parse_mask_type(mask_type), color_groups));
  }, py::arg("kh"), py::arg("kw"), py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("cin") = 1,
     py::arg("cout") = 1, "(live taps, live MACs per pixel, dense MACs per pixel) of a mask.");
  // The sampler's randomness (core/philox.h): pixelcnn_fast.rng (Numba) and the tests' NumPy twin are
  // checked against these.
  t.def("philox4x32_10", &rng_block, py::arg("counter"), py::arg("key"),
        "Philox4x32-10 of counter (4 words) under key (2 words): the output block as 4 ints (core/philox.h).");
  t.def("philox_uniform", &rng_uniform, py::arg("seed"), py::arg("image"), py::arg("position"), py::arg("channel"),
        "The sampler's uniform in [0, 1) for (image, position = i * W + j, channel) under a 64-bit seed.");
  t.def("philox_uniform_grid", &rng_uniform_grid, py::arg("seed"), py::arg("n"), py::arg("h"), py::arg("w"),
        py::arg("c"), py::arg("image_offset") = 0,
        "float32 (n, h, w, c): u[b, i, j, ch] = philox_uniform(seed, image_offset + b, i * w + j, ch).");
  t.def("draw_levels", &rng_draw_levels, py::arg("values"), py::arg("head"), py::arg("temperature"), py::arg("u"),
        py::arg("return_margin") = false, py::arg("isa") = "scalar",
        "int32 (M,) levels drawn by inverse CDF from each row of values (M, N) float32 with uniform u[i]; head "
        "'bernoulli' (N == 1, logits), 'logits' or 'probs'. return_margin: also the float32 distance of each u to "
        "the nearest cdf boundary (draws closer than rounding may differ between backends). isa: 'scalar' "
        "(philox.h) or, for 'logits', a build's vectorised draw_logits (the CPU executor's).");
  t.def("draw_logistic_mixture", &rng_draw_logistic_mixture, py::arg("values"), py::arg("components"),
        py::arg("channel"), py::arg("drawn"), py::arg("levels"), py::arg("temperature"), py::arg("u_component"),
        py::arg("u"), py::arg("return_margin") = false, py::arg("layout") = "pixelcnn_pp",
        "int32 (M,) levels of image channel `channel` drawn from each row of values (M, 3K grey or 10K RGB) float32 "
        "by core/philox.h's draw_logistic_mixture; drawn (M, 2) int32: the R and G levels already drawn at the "
        "pixel (read by RGB channels 1, 2). return_margin: also each draw's distance to a decision boundary. "
        "layout: 'pixelcnn_pp' (openai's) or 'tfp' (tfd.PixelCNN's component-major blocks).");
  // The executor's thread team (core/team.h): what one meeting of its spinning barrier costs, on the module's pool.
  t.def("barrier_ns", [](int members, int64_t rounds) {
    if (rounds < 1) throw py::value_error("barrier_ns: rounds must be >= 1, got " + std::to_string(rounds));
    const auto par = pool();
    if (members < 1 || members > par->num_threads())
      throw py::value_error("barrier_ns: members must be in [1, " + std::to_string(par->num_threads()) +
                            "] (the pool's threads, _core.set_num_threads), got " + std::to_string(members));
    py::gil_scoped_release release;
    return pcf::testing::barrier_ns(*par, members, rounds);
  }, py::arg("members"), py::arg("rounds"),
        "Mean nanoseconds per meeting of `members` threads of the module's pool at core/team.h's spinning barrier, "
        "over `rounds` meetings; raises if a member ever passed a meeting early.");
  t.def("set_position_split", [](const std::string& policy) {
    const std::string names[] = {"auto", "always", "never", "auto_slow"};
    const std::string before = names[static_cast<int>(pcf::position_split())];
    for (int k = 0; k < 4; ++k)
      if (policy == names[k]) {
        pcf::set_position_split(static_cast<pcf::PositionSplit>(k));
        return before;
      }
    throw py::value_error("set_position_split: policy must be 'auto', 'always', 'never' or 'auto_slow', got '" +
                          policy + "'");
  }, py::arg("policy"),
        "How a ColumnProgram call with fewer images than threads uses them, process-wide (core/column_program.h "
        "PositionSplit): 'auto' (split each position, fall back to one thread when that is slower), 'always' "
        "(split, never fall back: tests), 'never' (one thread per image, as before the split), 'auto_slow' (auto "
        "finding every split slower: each try falls back at its first timed window). Returns the previous policy.");
  t.def("team_failure", [](int members, int failing, int64_t rounds) {
    const auto par = pool();
    if (members < 1 || members > par->num_threads() || failing < 0 || failing >= members || rounds < 1)
      throw py::value_error("team_failure: need 1 <= members <= the pool's " + std::to_string(par->num_threads()) +
                            " threads, 0 <= failing < members, rounds >= 1");
    py::gil_scoped_release release;
    pcf::testing::team_failure(*par, members, failing, rounds);
  }, py::arg("members"), py::arg("failing"), py::arg("rounds"),
        "core/team.h: `members` pool threads meet `rounds` times and member `failing` throws halfway; the "
        "exception (RuntimeError) must reach the caller with no thread left waiting.");
  t.def("mixture_component_uniform", &rng_mixture_component_uniform, py::arg("seed"), py::arg("image"),
        py::arg("position"), "The pixel's component uniform: word 1 of the (image, position, 0, 0) Philox block.");
}

}  // namespace pcf_core_binding
