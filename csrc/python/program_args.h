// Binding (pybind11, shared by the CPU and CUDA modules): a column program built from its text spec and
// the NumPy arrays the spec lists, with the same checks and messages in both modules.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "../core/checks.h"
#include "../core/column_program.h"
#include "../core/program_spec.h"
#include "conv_args.h"

namespace pcf_binding {

namespace py = pybind11;

// Raises a checks.h message (non-empty) as ValueError.
inline void raise_if_bad(const std::string& err) {
  if (!err.empty()) throw py::value_error(err);
}

// An integer argument in [lo, 2**bits): Python ints and NumPy integer scalars (via __index__), never bools or
// floats. A wrong type is a TypeError, a value out of range a ValueError, each naming the argument and the
// value in the words of pixelcnn_fast/checks.py check_int (not pybind's "incompatible function arguments"
// or a silent wrap).
inline uint64_t int_arg(const py::handle& v, const char* fn, const char* name, int bits, int64_t lo = 0) {
  const std::string range = std::string("an integer in [") + std::to_string(lo) + ", 2**" + std::to_string(bits) + ")";
  if (py::isinstance<py::bool_>(v) || !PyIndex_Check(v.ptr()))
    throw py::type_error(std::string(fn) + ": " + name + " must be " + range + ", got " +
                         std::string(py::str(py::type::handle_of(v).attr("__name__"))) + " " +
                         std::string(py::repr(v)));
  py::int_ i = py::reinterpret_steal<py::int_>(PyNumber_Index(v.ptr()));
  if (!i) throw py::error_already_set();
  const bool below = PyObject_RichCompareBool(i.ptr(), py::int_(lo).ptr(), Py_LT) == 1;
  const unsigned long long x = below ? 0 : PyLong_AsUnsignedLongLong(i.ptr());
  const bool too_big = !below && ((x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) ||
                                  (bits < 64 && x >= (1ull << bits)));
  PyErr_Clear();
  if (below || too_big)
    throw py::value_error(std::string(fn) + ": " + name + " must be " + range + ", got " + std::string(py::str(i)));
  return x;
}

// The temperature: a real number (not a bool), positive and finite as a float32 (checks::temperature).
inline float temperature_arg(const py::handle& v, const char* fn) {
  if (py::isinstance<py::bool_>(v) || !(PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr()) ||
                                        PyObject_HasAttrString(v.ptr(), "__float__")) ||
      py::isinstance<py::str>(v))
    throw py::type_error(std::string(fn) + ": temperature must be a positive finite float32, got " +
                         std::string(py::str(py::type::handle_of(v).attr("__name__"))));
  const double t = PyFloat_AsDouble(v.ptr());
  if (t == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  raise_if_bad(pcf::checks::temperature(fn, t));
  return static_cast<float>(t);
}

// The checked scalars of one sample call on a program (n, seed, temperature, image_offset): every rule of
// checks.h, the program's per-image batch and the memory the call would need, before anything is allocated.
struct SampleArgs {
  int64_t n = 0;
  uint64_t seed = 0;
  float temperature = 1.0f;
  int64_t image_offset = 0;
};

inline SampleArgs sample_args(const char* fn, int64_t h, int64_t w, int64_t c, int64_t const_batch,
                              int64_t cache_floats_per_image, const py::handle& n, const py::handle& seed,
                              const py::handle& temperature, const py::handle& image_offset) {
  SampleArgs a;
  a.n = static_cast<int64_t>(int_arg(n, fn, "n", 32, 1));
  a.seed = int_arg(seed, fn, "seed", 64);
  a.temperature = temperature_arg(temperature, fn);
  a.image_offset = static_cast<int64_t>(int_arg(image_offset, fn, "image_offset", 32));
  raise_if_bad(pcf::checks::image_offset(fn, a.image_offset, a.n));
  raise_if_bad(pcf::checks::batch(fn, const_batch, a.n));
  raise_if_bad(pcf::checks::memory(fn, a.n, h, w, c, cache_floats_per_image));
  return a;
}

// The caller's (height, width, channels), when given, must be the program's: the output is always sized
// from the program (an older signature took them from the caller and wrote past a smaller buffer).
inline void check_caller_shape(const char* fn, int64_t h, int64_t w, int64_t c, const py::object& hc,
                               const py::object& wc, const py::object& cc) {
  if (hc.is_none() && wc.is_none() && cc.is_none()) return;
  const std::string prog = "(" + std::to_string(h) + ", " + std::to_string(w) + ", " + std::to_string(c) + ")";
  auto str = [](const py::object& o) { return o.is_none() ? std::string("None") : std::string(py::str(o)); };
  const std::string got = "(" + str(hc) + ", " + str(wc) + ", " + str(cc) + ")";
  bool same = true;
  const int64_t want[3] = {h, w, c};
  const py::object* given[3] = {&hc, &wc, &cc};
  for (int k = 0; k < 3; ++k) {
    if (given[k]->is_none() || !PyIndex_Check(given[k]->ptr())) {
      same = false;
      continue;
    }
    py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(given[k]->ptr()));
    if (!v) throw py::error_already_set();
    if (PyObject_RichCompareBool(v.ptr(), py::int_(want[k]).ptr(), Py_EQ) != 1) same = false;
  }
  if (!same)
    throw py::value_error(std::string(fn) + ": (height, width, channels) " + got +
                          " is not the program's image shape " + prog +
                          " (the output is sized from the program; omit them)");
}

// arrays[k]: spec input k as a C-contiguous float32 rank-4 NumPy array (kernels (kh, kw, cin, cout),
// constants (n|1, H|1, W|1, C|1)). batch > 0: per-image constants must hold exactly that many images.
// flattenable: for a GPU program or its host emulation (column_program.h).
inline pcf::ColumnProgram program_from_spec(const std::string& spec, const std::vector<py::object>& arrays,
                                            int64_t batch, const char* fn, bool flattenable = false) {
  std::vector<pcf::ConstTensor> consts;
  for (size_t k = 0; k < arrays.size(); ++k) {
    const std::string where = std::string(fn) + ": arrays[" + std::to_string(k) + "]";
    if (!py::isinstance<py::array>(arrays[k]))
      throw py::type_error(where + " must be a numpy.ndarray, got " +
                           std::string(py::str(py::type::handle_of(arrays[k]).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(arrays[k]);
    if (!a.dtype().is(py::dtype::of<float>()))
      throw py::type_error(where + " must have dtype float32, got " + std::string(py::str(a.dtype())));
    std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
    if (a.ndim() != 4) throw py::value_error(where + " must have rank 4, got shape " + shape_str(shape));
    if (!(a.flags() & py::array::c_style))
      throw py::value_error(where + " must be C-contiguous (use numpy.ascontiguousarray)");
    pcf::ConstTensor t;
    t.n = a.shape(0);
    t.h = a.shape(1);
    t.w = a.shape(2);
    t.c = a.shape(3);
    const float* d = static_cast<const float*>(a.data());
    t.data.assign(d, d + a.size());
    consts.push_back(std::move(t));
  }
  try {
    return pcf::build_from_spec(spec, consts, batch, flattenable);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(std::string(fn) + ": " + e.what());
  }
}

}  // namespace pcf_binding
