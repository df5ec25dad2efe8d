// Binding (pybind11): pixelcnn_fast._core — the csrc/core masked conv and the cached sampler's executor on
// NumPy arrays. A thin adapter: it checks arguments once, with messages naming the argument, and calls the
// core. No algorithm here.
//
// `_core` itself is the product (what pixelcnn_fast's front end and users call). The test seams -- the CUDA
// kernels' per-element arithmetic and sampler loops run on the host, the core's Philox and draws, its tap
// analysis -- live in the submodule `_core.testing`, which tests, benchmarks and scripts import explicitly
// (`from pixelcnn_fast._core import testing`).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cfloat>
#include <cstdint>
#include <cmath>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../core/column_program.h"
#include "../core/flatten.h"
#include "../core/program.h"
#include "../core/kernels.h"
#include "../core/masked_conv.h"
#include "../core/masked_conv_element.h"
#include "../core/philox.h"
#include "../core/tapset.h"
#include "../core/threadpool.h"
#include "conv_args.h"
#include "program_args.h"

namespace py = pybind11;

namespace {

using pcf_binding::make_problem;
using pcf_binding::pair_arg;
using pcf_binding::Problem;
using pcf_binding::shape_str;

// The signature shared by the core's masked conv functions (blocked fast path and per-element version).
using ConvFn = void (*)(const pcf::TapSet&, const pcf::ConvGeometry&, const float*, const float*, float*,
                        const pcf::Parallel&);

// The module's pool, shared: each call takes its own reference while it holds the GIL (pool() copies the
// pointer), so set_num_threads() from another Python thread replaces the pool without destroying one that a
// call running with the GIL released still uses.
std::shared_ptr<pcf::ThreadPool>& pool_slot() {
  static std::shared_ptr<pcf::ThreadPool> p =
      std::make_shared<pcf::ThreadPool>(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

std::shared_ptr<pcf::ThreadPool> pool() { return pool_slot(); }  // call with the GIL held

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

// Accepts only C-contiguous float32 arrays of the given rank: a silent conversion would copy (and, for
// out=, write into a temporary the caller never sees).
const float* checked_input(const py::handle& obj, const char* fn, const char* name, int rank) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(fn) + ": " + name + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(fn) + ": " + name + " must have dtype float32, got " +
                         std::string(py::str(a.dtype())));
  if (a.ndim() != rank)
    throw py::value_error(std::string(fn) + ": " + name + " must have rank " + std::to_string(rank) + ", got shape " +
                          shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(fn) + ": " + name +
                          " must be C-contiguous (use numpy.ascontiguousarray); got strides that are not");
  return static_cast<const float*>(a.data());
}

// Image completion's known levels: None, or int32 C-contiguous (n, H, W, C) of the program's image; the values
// are checked by the core (checks::known_levels).
const int32_t* checked_known(const py::object& obj, const char* fn, int64_t n, int h, int w, int c) {
  if (obj.is_none()) return nullptr;
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(fn) + ": known must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<int32_t>()))
    throw py::type_error(std::string(fn) + ": known must have dtype int32, got " + std::string(py::str(a.dtype())));
  const std::vector<py::ssize_t> want = {static_cast<py::ssize_t>(n), h, w, c};
  if (std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()) != want || !(a.flags() & py::array::c_style))
    throw py::value_error(std::string(fn) + ": known must be C-contiguous with shape " + shape_str(want) + ", got " +
                          shape_str(a));
  return static_cast<const int32_t*>(a.data());
}

py::array_t<float> output(const py::object& out, const char* fn, const std::vector<py::ssize_t>& shape) {
  if (out.is_none()) return py::array_t<float>(shape);
  checked_input(out, fn, "out", static_cast<int>(shape.size()));
  py::array_t<float> a = py::reinterpret_borrow<py::array_t<float>>(out);
  std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
  if (got != shape)
    throw py::value_error(std::string(fn) + ": out must have shape " + shape_str(shape) + ", got " + shape_str(a));
  if (!a.writeable()) throw py::value_error(std::string(fn) + ": out must be writeable");
  return a;
}

template <ConvFn kRun>
py::array_t<float> forward(const py::object& x_obj, const py::object& k_obj, const py::object& mask_type,
                           int color_groups, const py::object& dilation, const std::string& padding,
                           const py::object& out) {
  const char* fn = "masked_conv2d_forward";
  const float* x = checked_input(x_obj, fn, "x", 4);
  const float* k = checked_input(k_obj, fn, "kernel", 4);
  py::array xa = py::reinterpret_borrow<py::array>(x_obj), ka = py::reinterpret_borrow<py::array>(k_obj);
  Problem p = make_problem(fn, xa.shape(0), xa.shape(1), xa.shape(2), xa.shape(3), static_cast<int>(ka.shape(0)),
                           static_cast<int>(ka.shape(1)), ka.shape(2), ka.shape(3), mask_type, color_groups, dilation,
                           padding, k);
  py::array_t<float> y = output(out, fn, {xa.shape(0), p.geom.ho, p.geom.wo, ka.shape(3)});
  float* yp = y.mutable_data();
  const auto par = pool();
  {
    py::gil_scoped_release release;
    kRun(p.taps, p.geom, x, k, yp, *par);
  }
  return y;
}

template <ConvFn kRun>
py::array_t<float> backprop_input(const py::object& dy_obj, const py::object& k_obj, const py::object& input_hw,
                                  const py::object& mask_type, int color_groups, const py::object& dilation,
                                  const std::string& padding, const py::object& out) {
  const char* fn = "masked_conv2d_backprop_input";
  const float* dy = checked_input(dy_obj, fn, "dy", 4);
  const float* k = checked_input(k_obj, fn, "kernel", 4);
  py::array da = py::reinterpret_borrow<py::array>(dy_obj), ka = py::reinterpret_borrow<py::array>(k_obj);
  auto [h, w] = pair_arg(input_hw, fn, "input_hw");
  if (h < 1 || w < 1)
    throw py::value_error(std::string(fn) + ": input_hw must be positive, got (" + std::to_string(h) + ", " +
                          std::to_string(w) + ")");
  const int64_t cin = ka.shape(2), cout = ka.shape(3);
  Problem p = make_problem(fn, da.shape(0), h, w, cin, static_cast<int>(ka.shape(0)), static_cast<int>(ka.shape(1)), cin,
                           cout, mask_type, color_groups, dilation, padding, k);
  std::vector<py::ssize_t> want = {da.shape(0), p.geom.ho, p.geom.wo, cout};
  std::vector<py::ssize_t> got(da.shape(), da.shape() + 4);
  if (got != want)
    throw py::value_error(std::string(fn) + ": dy must have shape " + shape_str(want) +
                          " (the forward output for input_hw and this kernel), got " + shape_str(da));
  py::array_t<float> dx = output(out, fn, {da.shape(0), h, w, cin});
  float* dxp = dx.mutable_data();
  const auto par = pool();
  {
    py::gil_scoped_release release;
    kRun(p.taps, p.geom, dy, k, dxp, *par);
  }
  return dx;
}

template <ConvFn kRun>
py::array_t<float> backprop_filter(const py::object& x_obj, const py::object& dy_obj, const py::object& kernel_hw,
                                   const py::object& mask_type, int color_groups, const py::object& dilation,
                                   const std::string& padding, const py::object& out) {
  const char* fn = "masked_conv2d_backprop_filter";
  const float* x = checked_input(x_obj, fn, "x", 4);
  const float* dy = checked_input(dy_obj, fn, "dy", 4);
  py::array xa = py::reinterpret_borrow<py::array>(x_obj), da = py::reinterpret_borrow<py::array>(dy_obj);
  auto [kh, kw] = pair_arg(kernel_hw, fn, "kernel_hw");
  const int64_t cin = xa.shape(3), cout = da.shape(3);
  Problem p = make_problem(fn, xa.shape(0), xa.shape(1), xa.shape(2), cin, kh, kw, cin, cout, mask_type, color_groups,
                           dilation, padding);
  std::vector<py::ssize_t> want = {xa.shape(0), p.geom.ho, p.geom.wo, cout};
  std::vector<py::ssize_t> got(da.shape(), da.shape() + 4);
  if (got != want)
    throw py::value_error(std::string(fn) + ": dy must have shape " + shape_str(want) +
                          " (batch and output size of the forward pass on x), got " + shape_str(da));
  py::array_t<float> dk = output(out, fn, {kh, kw, cin, cout});
  float* dkp = dk.mutable_data();
  const auto par = pool();
  {
    py::gil_scoped_release release;
    kRun(p.taps, p.geom, x, dy, dkp, *par);
  }
  return dk;
}

}  // namespace

// ------------------------------------------------------------------ sampler randomness (core/philox.h)

namespace {

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
                           const py::object& u_obj, bool return_margin) {
  const char* fn = "draw_levels";
  const float* values = checked_input(values_obj, fn, "values", 2);
  const float* u = checked_input(u_obj, fn, "u", 1);
  py::array va = py::reinterpret_borrow<py::array>(values_obj), ua = py::reinterpret_borrow<py::array>(u_obj);
  pcf::DrawHead head;
  if (!pcf::parse_name(head_name, &head)) {  // program.h's head names, as the spec's `head kind=`
    std::string names;
    const auto& table = pcf::name_table<pcf::DrawHead>();
    for (size_t k = 0; k < table.size(); ++k)
      names += (k == 0 ? "'" : k + 1 == table.size() ? " or '" : ", '") + std::string(table[k].first) + "'";
    throw py::value_error(std::string(fn) + ": head must be " + names + ", got '" + head_name + "'");
  }
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
  py::array_t<int32_t> levels(m);
  py::array_t<float> margins(return_margin ? m : 0);
  int32_t* lp = levels.mutable_data();
  float* mp = return_margin ? margins.mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    for (py::ssize_t i = 0; i < m; ++i)
      lp[i] = pcf::draw_level(head, values + i * n, static_cast<int>(n), 1, t, u[i], mp ? mp + i : nullptr);
  }
  if (return_margin) return py::make_tuple(levels, margins);
  return levels;
}

}  // namespace


// ---- column program (the cached sampler's executor): a builder the Python lowering fills in ----
namespace {

// An image fed to a program must be (n >= 1, H, W, C) of that program.
void check_image_shape(const pcf::ColumnProgram& p, const py::array& a, const char* fn) {
  if (a.shape(0) < 1 || a.shape(1) != p.height() || a.shape(2) != p.width() || a.shape(3) != p.channels())
    throw py::value_error(std::string(fn) + ": image must have shape (n >= 1, " + std::to_string(p.height()) +
                          ", " + std::to_string(p.width()) + ", " + std::to_string(p.channels()) + "), got (" +
                          std::to_string(a.shape(0)) + ", " + std::to_string(a.shape(1)) + ", " +
                          std::to_string(a.shape(2)) + ", " + std::to_string(a.shape(3)) + ")");
}

using pcf_binding::check_caller_shape;
using pcf_binding::SampleArgs;

SampleArgs program_sample_args(const pcf::ColumnProgram& p, const char* fn, const py::handle& n,
                               const py::handle& seed, const py::handle& temperature,
                               const py::handle& image_offset) {
  return pcf_binding::sample_args(fn, p.height(), p.width(), p.channels(), p.const_batch(),
                                  p.cache_floats_per_image(), n, seed, temperature, image_offset);
}

std::vector<py::ssize_t> image_batch_shape(const pcf::ColumnProgram& p, int64_t n) {
  return {static_cast<py::ssize_t>(n), p.height(), p.width(), p.channels()};
}

// A teacher-forced image batch must match the program's per-image constants and fit in memory.
void check_teacher_forced_batch(const pcf::ColumnProgram& p, const py::array& a, const char* fn) {
  pcf_binding::raise_if_bad(pcf::checks::batch(fn, p.const_batch(), a.shape(0)));
  pcf_binding::raise_if_bad(pcf::checks::memory(fn, a.shape(0), p.height(), p.width(), p.channels(),
                                                p.cache_floats_per_image(),
                                                int64_t(p.height()) * p.width() * p.head_channels()));
}

// Runs the executor with the GIL released, interruptibly. Once per row the thread of the first images (the
// calling thread: ThreadPool::for_each gives it range 0) takes the GIL, calls on_row and
// PyErr_CheckSignals(): Python runs its SIGINT handler only on the main thread and only when it gets control,
// so a C++ loop that never asks would ignore Ctrl-C for the whole call. A raised KeyboardInterrupt (or
// on_row's own exception) sets `cancel`; every thread stops at its next row and the exception is re-raised
// here. The program keeps no state of a call (its caches live in the call), so it stays usable. A row, not a
// position: the GIL is taken H times per call, not H * W.
void run_sample(const pcf::ColumnProgram& p, const SampleArgs& a, int32_t* levels, float* margins,
                const py::object& on_row, double* step_seconds, const int32_t* known = nullptr) {
  std::atomic<bool> cancel{false};
  std::unique_ptr<py::error_already_set> error;
  const std::function<void(int64_t)> row = [&](int64_t rows) {
    py::gil_scoped_acquire acquire;
    if (cancel.load()) return;
    try {
      if (!on_row.is_none()) on_row(rows);
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    } catch (py::error_already_set& e) {
      error = std::make_unique<py::error_already_set>(std::move(e));
      cancel.store(true);
    }
  };
  const auto par = pool();
  {
    py::gil_scoped_release release;
    p.sample(a.n, a.seed, a.temperature, a.image_offset, levels, margins, *par, row, step_seconds, known, &cancel);
  }
  if (error) {
    error->restore();
    error.reset();
    throw py::error_already_set();
  }
}

void bind_column_program(py::module_& m) {
  py::class_<pcf::ColumnProgram>(m, "ColumnProgram",
                                 "A lowered model's column program and its cached incremental executor.")
      .def_static("from_spec", [](const std::string& spec, const std::vector<py::object>& arrays, int64_t batch) {
        return new pcf::ColumnProgram(pcf_binding::program_from_spec(spec, arrays, batch, "ColumnProgram.from_spec"));
      }, py::arg("spec"), py::arg("arrays"), py::arg("batch") = 0,
         "Builds a program from its text spec (csrc/core/program_spec.h) and the arrays it lists.")
      .def("teacher_forced", [](const pcf::ColumnProgram& p, const py::object& image) {
        const float* x = checked_input(image, "ColumnProgram.teacher_forced", "image", 4);
        py::array a = py::reinterpret_borrow<py::array>(image);
        check_image_shape(p, a, "ColumnProgram.teacher_forced");
        check_teacher_forced_batch(p, a, "ColumnProgram.teacher_forced");
        py::array_t<float> out({a.shape(0), a.shape(1), a.shape(2), static_cast<py::ssize_t>(p.head_channels())});
        float* o = out.mutable_data();
        const auto par = pool();
        {
          py::gil_scoped_release release;
          p.teacher_forced(x, a.shape(0), o, *par);
        }
        return out;
      }, py::arg("image"), "Head values at every position with the given image fed in (the cached path).")
      .def("sample", [](const pcf::ColumnProgram& p, const py::object& n, const py::object& seed,
                        const py::object& temperature, const py::object& image_offset, const py::object& h,
                        const py::object& w, const py::object& c, const py::object& on_row,
                        const py::object& known_obj) {
        const char* fn = "ColumnProgram.sample";
        check_caller_shape(fn, p.height(), p.width(), p.channels(), h, w, c);
        const SampleArgs a = program_sample_args(p, fn, n, seed, temperature, image_offset);
        const int32_t* known = checked_known(known_obj, fn, a.n, p.height(), p.width(), p.channels());
        const std::vector<py::ssize_t> shape = image_batch_shape(p, a.n);
        py::array_t<int32_t> levels(shape);
        py::array_t<float> margins(shape);
        run_sample(p, a, levels.mutable_data(), margins.mutable_data(), on_row, nullptr, known);
        return py::make_tuple(levels, margins);
      }, py::arg("n"), py::arg("seed"), py::arg("temperature"), py::arg("image_offset") = 0,
         py::arg("height") = py::none(), py::arg("width") = py::none(), py::arg("channels") = py::none(),
         py::arg("on_row") = py::none(), py::arg("known") = py::none(),
         "(levels int32, margins float32), each (n, H, W, C) of the program; on_row(rows_done) after each row. "
         "height/width/channels, if given, must be the program's. Ctrl-C stops the call within one row "
         "(KeyboardInterrupt; the program stays usable). known (image completion, int32 (n, H, W, C)): a "
         "level >= 0 is written instead of drawn (margin +inf), -1 draws.")
      .def("sample_profile", [](const pcf::ColumnProgram& p, const py::object& n, const py::object& seed,
                                const py::object& temperature, const py::object& h, const py::object& w,
                                const py::object& c) {
        const char* fn = "ColumnProgram.sample_profile";
        check_caller_shape(fn, p.height(), p.width(), p.channels(), h, w, c);
        const SampleArgs a = program_sample_args(p, fn, n, seed, temperature, py::int_(0));
        py::array_t<int32_t> levels(image_batch_shape(p, a.n));
        std::vector<double> seconds(p.num_steps() + 1);
        run_sample(p, a, levels.mutable_data(), nullptr, py::none(), seconds.data());
        py::list out;
        for (int k = 0; k < p.num_steps(); ++k)
          out.append(py::make_tuple(p.step_name(k), p.step_kind(k), seconds[k]));
        out.append(py::make_tuple("(draws)", "draw", seconds[p.num_steps()]));
        return out;
      }, py::arg("n"), py::arg("seed"), py::arg("temperature"), py::arg("height") = py::none(),
         py::arg("width") = py::none(), py::arg("channels") = py::none(),
         "Samples n images and returns [(step name, kind, thread-seconds)] per program step plus the draws: "
         "where the cached sampler's time goes (two clock reads per step and position).")
      .def_property_readonly("image_shape", [](const pcf::ColumnProgram& p) {
        return py::make_tuple(p.height(), p.width(), p.channels());
      }, "(H, W, C) of the images the program draws (every output is sized from it).")
      .def_property_readonly("head_channels", &pcf::ColumnProgram::head_channels)
      .def_property_readonly("const_batch", &pcf::ColumnProgram::const_batch,
                             "Images the per-image constants hold (1: shared by any n).")
      .def("cache_floats_per_image", &pcf::ColumnProgram::cache_floats_per_image)
      .def("macs_per_position", &pcf::ColumnProgram::macs_per_position)
      .def("executed_macs_per_position", &pcf::ColumnProgram::executed_macs_per_position);
}

// ------------------------------------------------------------------ test seams (_core.testing)

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

// (live taps, live MACs per pixel, dense MACs per pixel) of a TapSet, as the tap-analysis seams return it.
py::tuple tap_summary(const pcf::TapSet& ts) {
  std::vector<std::pair<int, int>> taps;
  for (int t = 0; t < ts.num_taps(); ++t) taps.push_back({ts.ky[t], ts.kx[t]});
  return py::make_tuple(taps, ts.live_macs_per_pixel(), ts.dense_macs_per_pixel());
}

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
        py::arg("return_margin") = false,
        "int32 (M,) levels drawn by inverse CDF from each row of values (M, N) float32 with uniform u[i]; head "
        "'bernoulli' (N == 1, logits), 'logits' or 'probs'. return_margin: also the float32 distance of each u to "
        "the nearest cdf boundary (draws closer than rounding may differ between backends).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pixelcnn_fast C++ core (CPU): masked convolution over live taps and the cached sampler on NumPy float32 "
            "arrays. Test seams: the submodule testing.";
  m.def("masked_conv2d_forward", &forward<pcf::masked_conv2d_forward>, py::arg("x"), py::arg("kernel"), py::arg("mask_type"),
        py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1), py::arg("padding") = "same",
        py::arg("out") = py::none(), "y = masked conv of x (N,H,W,Cin) with kernel (kh,kw,Cin,Cout), live taps only. mask_type None: the "
        "live taps and channel ranges are read from the kernel's non-zeros.");
  m.def("masked_conv2d_backprop_input", &backprop_input<pcf::masked_conv2d_backprop_input>, py::arg("dy"), py::arg("kernel"), py::arg("input_hw"),
        py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("padding") = "same", py::arg("out") = py::none(), "Gradient of the masked conv w.r.t. its input.");
  m.def("masked_conv2d_backprop_filter", &backprop_filter<pcf::masked_conv2d_backprop_filter>, py::arg("x"), py::arg("dy"), py::arg("kernel_hw"),
        py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("padding") = "same", py::arg("out") = py::none(),
        "Gradient w.r.t. the kernel; entries of dead taps are exactly 0.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    pool_slot() = std::make_shared<pcf::ThreadPool>(n);
  }, py::arg("n"));
  m.def("get_num_threads", [] { return pool()->num_threads(); });
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (const char* isa : {"avx512", "avx2", "generic"})
      if (pcf::kernels_by_name(isa) != nullptr) out.push_back(isa);
    return out;
  }, "Microkernel builds this CPU can run (PIXELCNN_FAST_ISA picks one at process start).");
  m.def("isa", [] { return std::string(pcf::active_kernels().isa); },
        "The instruction set of the microkernels in use (avx512, avx2 or generic).");
  bind_column_program(m);
  py::module_ testing = m.def_submodule("testing");
  bind_testing(testing);
  // Also importable by name (import pixelcnn_fast._core.testing, importlib), not only as an attribute.
  py::module_::import("sys").attr("modules")[py::str(std::string(PyModule_GetName(m.ptr())) + ".testing")] = testing;
}
