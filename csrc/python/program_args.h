// Binding (pybind11, shared by the CPU and CUDA modules): a column program built from its text spec and
// the NumPy arrays the spec lists, with the same checks and messages in both modules.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "../core/column_program.h"
#include "../core/program_spec.h"
#include "conv_args.h"

namespace pcf_binding {

namespace py = pybind11;

// arrays[k]: spec input k as a C-contiguous float32 rank-4 NumPy array (kernels (kh, kw, cin, cout),
// constants (n|1, H|1, W|1, C|1)). batch > 0: per-image constants must hold exactly that many images.
inline pcf::ColumnProgram program_from_spec(const std::string& spec, const std::vector<py::object>& arrays,
                                            int64_t batch, const char* fn) {
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
    return pcf::build_from_spec(spec, consts, batch);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(std::string(fn) + ": " + e.what());
  }
}

}  // namespace pcf_binding
