// Binding (pybind11): pixelcnn_fast._core — the csrc/core masked conv on NumPy arrays. A thin adapter:
// it checks arguments once, with messages naming the argument, and calls the core. No algorithm here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../core/kernels.h"
#include "../core/masked_conv.h"
#include "../core/tapset.h"
#include "../core/threadpool.h"

namespace py = pybind11;

namespace {

std::unique_ptr<pcf::ThreadPool>& pool() {
  static std::unique_ptr<pcf::ThreadPool> p =
      std::make_unique<pcf::ThreadPool>(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

std::string shape_str(const std::vector<py::ssize_t>& v) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << (v.size() == 1 ? ",)" : ")");
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

std::pair<int, int> pair_arg(const py::object& v, const char* fn, const char* name) {
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
// (DESIGN.md: the kernel's zeros are the mask), for kernels masked by any mechanism.
Problem make_problem(const char* fn, int64_t n, int64_t h, int64_t w, int64_t cin, int kh, int kw, int64_t kernel_cin,
                     int64_t cout, const py::object& mask_type_obj, int color_groups, const py::object& dilation,
                     const std::string& padding, const float* kernel = nullptr) {
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
  {
    py::gil_scoped_release release;
    pcf::masked_conv2d_forward(p.taps, p.geom, x, k, yp, *pool());
  }
  return y;
}

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
  {
    py::gil_scoped_release release;
    pcf::masked_conv2d_backprop_input(p.taps, p.geom, dy, k, dxp, *pool());
  }
  return dx;
}

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
  {
    py::gil_scoped_release release;
    pcf::masked_conv2d_backprop_filter(p.taps, p.geom, x, dy, dkp, *pool());
  }
  return dk;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pixelcnn_fast C++ core (CPU): masked convolution over live taps on NumPy float32 arrays.";
  m.def("masked_conv2d_forward", &forward, py::arg("x"), py::arg("kernel"), py::arg("mask_type"),
        py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1), py::arg("padding") = "same",
        py::arg("out") = py::none(), "y = masked conv of x (N,H,W,Cin) with kernel (kh,kw,Cin,Cout), live taps only. mask_type None: the "
        "live taps and channel ranges are read from the kernel's non-zeros.");
  m.def("masked_conv2d_backprop_input", &backprop_input, py::arg("dy"), py::arg("kernel"), py::arg("input_hw"),
        py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("padding") = "same", py::arg("out") = py::none(), "Gradient of the masked conv w.r.t. its input.");
  m.def("masked_conv2d_backprop_filter", &backprop_filter, py::arg("x"), py::arg("dy"), py::arg("kernel_hw"),
        py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("padding") = "same", py::arg("out") = py::none(),
        "Gradient w.r.t. the kernel; entries of dead taps are exactly 0.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    pool() = std::make_unique<pcf::ThreadPool>(n);
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
  m.def("kernel_live_taps", [](const py::object& k_obj) {
    const float* k = checked_input(k_obj, "kernel_live_taps", "kernel", 4);
    py::array ka = py::reinterpret_borrow<py::array>(k_obj);
    pcf::TapSet ts = pcf::TapSet::from_kernel(k, static_cast<int>(ka.shape(0)), static_cast<int>(ka.shape(1)),
                                              ka.shape(2), ka.shape(3));
    std::vector<std::pair<int, int>> taps;
    for (int t = 0; t < ts.num_taps(); ++t) taps.push_back({ts.ky[t], ts.kx[t]});
    return py::make_tuple(taps, ts.live_macs_per_pixel(), ts.dense_macs_per_pixel());
  }, py::arg("kernel"), "(live taps, MACs per pixel read, dense MACs per pixel) of a kernel's non-zero structure.");
  m.def("live_taps", [](int kh, int kw, const std::string& mask_type, int color_groups, int64_t cin, int64_t cout) {
    std::string err = pcf::check_mask_args(kh, kw, cin, cin, cout, mask_type, color_groups, 1, 1, "same");
    if (!err.empty()) throw py::value_error("live_taps: " + err);
    pcf::TapSet ts = pcf::TapSet::from_mask(kh, kw, cin, cout, pcf::parse_mask_type(mask_type), color_groups);
    std::vector<std::pair<int, int>> taps;
    for (int t = 0; t < ts.num_taps(); ++t) taps.push_back({ts.ky[t], ts.kx[t]});
    return py::make_tuple(taps, ts.live_macs_per_pixel(), ts.dense_macs_per_pixel());
  }, py::arg("kh"), py::arg("kw"), py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("cin") = 1,
     py::arg("cout") = 1, "(live taps, live MACs per pixel, dense MACs per pixel) of a mask.");
}
