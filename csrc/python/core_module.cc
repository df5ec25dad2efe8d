// Binding (pybind11): pixelcnn_fast._core — the csrc/core masked conv and the cached sampler's executor on
// NumPy arrays: the product, what pixelcnn_fast's front end and users call. A thin adapter: it checks arguments
// once, with messages naming the argument (core_args.h, shared with the test seams), and calls the core. No
// algorithm here.
//
// The test seams -- the CUDA kernels' per-element arithmetic and sampler loops run on the host, the core's
// Philox and draws, its tap analysis -- are the submodule `_core.testing` (core_testing.cc), which tests,
// benchmarks and scripts import explicitly (`from pixelcnn_fast._core import testing`).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/column_program.h"
#include "../core/kernels.h"
#include "../core/masked_conv.h"
#include "../core/threadpool.h"
#include "core_args.h"
#include "program_args.h"

namespace pcf_core_binding {
namespace {

// ------------------------------------------------------------------ the cached sampler's executor

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
      .def("executed_macs_per_position", &pcf::ColumnProgram::executed_macs_per_position)
      .def("split_calls", [](const pcf::ColumnProgram& p) {
        const pcf::ColumnProgram::SplitCalls c = p.split_calls();
        py::dict d;
        d["split"] = c.split;
        d["fell_back"] = c.fell_back;
        d["skipped"] = c.skipped;
        d["timed_alone"] = c.timed_alone;
        return d;
      }, "How this program's calls with fewer images than threads ran so far (dict: split, fell_back: split and "
         "then finished on one thread, skipped: one thread per image without trying, after a fallback, timed_alone: "
         "one thread per image only to time one thread's pace, which the splits after compare with).")
      .def("executed_macs_per_image", &pcf::ColumnProgram::executed_macs_per_image)
      .def("model_macs_per_image", &pcf::ColumnProgram::model_macs_per_image);
}

}  // namespace
}  // namespace pcf_core_binding

PYBIND11_MODULE(_core, m) {
  using namespace pcf_core_binding;  // NOLINT: this file's adapters
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
  // The Sampler's weight check (sampler_cache.py): one memcmp per array over the buffers as they are. The NumPy
  // ways copy each array (tobytes) or allocate a temporary (array_equal) per call; fresh weight-sized allocations
  // can page-fault (gated PixelCNN's 2.25 MB in 60 arrays: 3.4 ms a call where they did, 1.5 where they did not).
  m.def("same_bytes", [](const std::vector<py::buffer>& current, const std::vector<py::buffer>& snapshot) {
    if (current.size() != snapshot.size()) return false;
    for (size_t i = 0; i < current.size(); ++i) {
      const py::buffer_info a = current[i].request(), b = snapshot[i].request();
      for (const py::buffer_info* info : {&a, &b}) {
        py::ssize_t stride = info->itemsize;  // C order, no gaps: then the bytes are ptr[0, size * itemsize)
        for (py::ssize_t d = info->ndim - 1; d >= 0; --d) {
          if (info->shape[d] > 1 && info->strides[d] != stride)
            throw py::value_error("same_bytes: array " + std::to_string(i) + " is not C-contiguous");
          stride *= info->shape[d];
        }
      }
      const size_t bytes = static_cast<size_t>(a.size * a.itemsize);
      if (a.ndim != b.ndim || a.shape != b.shape || a.format != b.format || a.itemsize != b.itemsize ||
          bytes != static_cast<size_t>(b.size * b.itemsize) || (bytes > 0 && std::memcmp(a.ptr, b.ptr, bytes) != 0))
        return false;
    }
    return true;
  }, py::arg("current"), py::arg("snapshot"),
        "True when the arrays pair up with equal shapes, formats and bytes (bits: a NaN equals itself, -0.0 is "
        "not 0.0). Arrays must be C-contiguous.");
  bind_column_program(m);
  py::module_ testing = m.def_submodule("testing");
  bind_testing(testing);
  // Also importable by name (import pixelcnn_fast._core.testing, importlib), not only as an attribute.
  py::module_::import("sys").attr("modules")[py::str(std::string(PyModule_GetName(m.ptr())) + ".testing")] = testing;
}
