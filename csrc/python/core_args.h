// Binding (pybind11, shared by core_module.cc and core_testing.cc, the two files of pixelcnn_fast._core): the
// NumPy argument checks, the masked-conv call wrappers and the column-program checks that the product and its
// test seams both use, so that a seam checks its arguments exactly as the product does. Inline functions in
// a named namespace: one thread pool for the whole module.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../core/checks.h"
#include "../core/column_program.h"
#include "../core/masked_conv.h"
#include "../core/tapset.h"
#include "../core/threadpool.h"
#include "conv_args.h"
#include "program_args.h"

namespace pcf_core_binding {

namespace py = pybind11;

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
inline std::shared_ptr<pcf::ThreadPool>& pool_slot() {
  static std::shared_ptr<pcf::ThreadPool> p =
      std::make_shared<pcf::ThreadPool>(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

inline std::shared_ptr<pcf::ThreadPool> pool() { return pool_slot(); }  // call with the GIL held

inline std::string shape_str(const py::array& a) {
  return shape_str(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

// Accepts only C-contiguous float32 arrays of the given rank: a silent conversion would copy (and, for
// out=, write into a temporary the caller never sees).
inline const float* checked_input(const py::handle& obj, const char* fn, const char* name, int rank) {
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
inline const int32_t* checked_known(const py::object& obj, const char* fn, int64_t n, int h, int w, int c) {
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

inline py::array_t<float> output(const py::object& out, const char* fn, const std::vector<py::ssize_t>& shape) {
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

// ---- column programs

// An image fed to a program must be (n >= 1, H, W, C) of that program.
inline void check_image_shape(const pcf::ColumnProgram& p, const py::array& a, const char* fn) {
  if (a.shape(0) < 1 || a.shape(1) != p.height() || a.shape(2) != p.width() || a.shape(3) != p.channels())
    throw py::value_error(std::string(fn) + ": image must have shape (n >= 1, " + std::to_string(p.height()) +
                          ", " + std::to_string(p.width()) + ", " + std::to_string(p.channels()) + "), got (" +
                          std::to_string(a.shape(0)) + ", " + std::to_string(a.shape(1)) + ", " +
                          std::to_string(a.shape(2)) + ", " + std::to_string(a.shape(3)) + ")");
}

using pcf_binding::check_caller_shape;
using pcf_binding::SampleArgs;

inline SampleArgs program_sample_args(const pcf::ColumnProgram& p, const char* fn, const py::handle& n,
                                      const py::handle& seed, const py::handle& temperature,
                                      const py::handle& image_offset) {
  return pcf_binding::sample_args(fn, p.height(), p.width(), p.channels(), p.const_batch(),
                                  p.cache_floats_per_image(), n, seed, temperature, image_offset);
}

inline std::vector<py::ssize_t> image_batch_shape(const pcf::ColumnProgram& p, int64_t n) {
  return {static_cast<py::ssize_t>(n), p.height(), p.width(), p.channels()};
}

// A teacher-forced image batch must match the program's per-image constants and fit in memory.
inline void check_teacher_forced_batch(const pcf::ColumnProgram& p, const py::array& a, const char* fn) {
  pcf_binding::raise_if_bad(pcf::checks::batch(fn, p.const_batch(), a.shape(0)));
  pcf_binding::raise_if_bad(pcf::checks::memory(fn, a.shape(0), p.height(), p.width(), p.channels(),
                                                p.cache_floats_per_image(),
                                                int64_t(p.height()) * p.width() * p.head_channels()));
}

// Adds the submodule's functions and classes (core_testing.cc).
void bind_testing(py::module_& testing);

}  // namespace pcf_core_binding
