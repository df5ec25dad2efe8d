// Binding (pybind11, shared by the CPU and CUDA modules): the semantic arguments of the masked conv —
// mask type, colour groups, dilation, padding — checked through the core's shared checker and turned
// into a tap set and a geometry, so that both modules accept the same calls with the same messages.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/masked_conv.h"
#include "../core/tapset.h"

namespace pcf_binding {

namespace py = pybind11;

// "(2, 3)", "(5,)": a shape as Python prints it. Built with std::to_string, not an ostream: on the H200 machine
// (g++ 13.3, Python 3.12, CuPy loaded) the CUDA module crashed formatting an integer into an ostringstream, so
// every error message with a shape segfaulted (session 10; the cause is not established).
inline std::string shape_str(const std::vector<py::ssize_t>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

inline std::pair<int, int> pair_arg(const py::object& v, const char* fn, const char* name) {
  if (py::isinstance<py::int_>(v)) {
    const int d = v.cast<int>();
    return {d, d};
  }
  auto t = v.cast<std::vector<int>>();
  if (t.size() != 2)
    throw py::value_error(std::string(fn) + ": " + name + " must be an int or a pair of ints, got " +
                          std::string(py::str(v)));
  return {t[0], t[1]};
}

struct Problem {
  pcf::TapSet taps;
  pcf::ConvGeometry geom;
};

// Validates the semantic arguments through the core's shared checker and builds tap set + geometry.
// mask_type None (only where the kernel is given) reads the tap set from the kernel's non-zeros
// (docs/SEMANTICS.md: the kernel's zeros are the mask), for kernels masked by any mechanism.
inline Problem make_problem(const char* fn, int64_t n, int64_t h, int64_t w, int64_t cin, int kh, int kw,
                            int64_t kernel_cin, int64_t cout, const py::object& mask_type_obj, int color_groups,
                            const py::object& dilation, const std::string& padding, const float* kernel = nullptr) {
  auto [dh, dw] = pair_arg(dilation, fn, "dilation");
  const bool from_kernel = mask_type_obj.is_none();
  if (from_kernel && kernel == nullptr)
    throw py::value_error(std::string(fn) + ": mask_type must be 'A' or 'B' here, got None");
  if (from_kernel && color_groups != 1)
    throw py::value_error(std::string(fn) + ": color_groups must be 1 with mask_type=None (the kernel's zeros "
                          "already give the channel structure), got " + std::to_string(color_groups));
  if (!from_kernel && !py::isinstance<py::str>(mask_type_obj))
    throw py::type_error(std::string(fn) + ": mask_type must be 'A', 'B' or None, got " +
                         std::string(py::repr(mask_type_obj)));
  const std::string mask_type = from_kernel ? "B" : mask_type_obj.cast<std::string>();
  // With mask_type=None the centre need not be defined, but 'same' padding still needs odd sizes to
  // match TF's placement; the shared checker keeps one rule for both.
  std::string err = pcf::check_mask_args(kh, kw, cin, kernel_cin, cout, mask_type, color_groups, dh, dw, padding);
  if (!err.empty()) throw py::value_error(std::string(fn) + ": " + err);
  Problem p;
  err = pcf::make_geometry(n, h, w, kh, kw, dh, dw, padding, &p.geom);
  if (!err.empty()) throw py::value_error(std::string(fn) + ": " + err);
  p.taps = from_kernel ? pcf::TapSet::from_kernel(kernel, kh, kw, cin, cout)
                       : pcf::TapSet::from_mask(kh, kw, cin, cout, pcf::parse_mask_type(mask_type), color_groups);
  return p;
}

}  // namespace pcf_binding
