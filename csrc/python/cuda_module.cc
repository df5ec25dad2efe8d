// Binding (pybind11): pixelcnn_fast._cuda — the csrc/cuda masked conv on CuPy arrays (any object with
// __cuda_array_interface__). A thin adapter: it reads the interface, checks arguments once with messages
// naming the argument (the semantic ones through the same checker as the CPU module), picks the stream and
// calls the launchers. No algorithm here.
//
// cudart is linked statically and nothing touches a device at import time, so the module imports on a
// machine without a GPU; every function first asks for a device and says clearly when there is none.
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/checks.h"
#include "../core/flatten.h"
#include "../core/masked_conv.h"
#include "../core/tapset.h"
#include "../cuda/column_program_cuda.h"
#include "../cuda/masked_conv_cuda.h"
#include "conv_args.h"
#include "program_args.h"

namespace py = pybind11;

namespace {

using pcf_binding::make_problem;
using pcf_binding::pair_arg;
using pcf_binding::Problem;
using pcf_binding::shape_str;

std::string cuda_error(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
}

// "" when a CUDA device can be used, else why not (no driver, no device, ...).
std::string device_problem() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it: it must not surface later as some kernel's error
    return "no CUDA device available (" + cuda_error("cudaGetDeviceCount", e) + ")";
  }
  if (count == 0) return "no CUDA device available (cudaGetDeviceCount found 0 devices)";
  return "";
}

void require_device(const char* fn) {
  const std::string problem = device_problem();
  if (!problem.empty()) throw std::runtime_error(std::string(fn) + ": " + problem);
}

std::string type_name(const py::handle& obj) {
  py::handle t = py::type::handle_of(obj);
  const std::string module = py::str(t.attr("__module__"));
  const std::string name = py::str(t.attr("__qualname__"));
  return module == "builtins" ? name : module + "." + name;
}

// A float32 device array read from __cuda_array_interface__ (versions 0-3).
struct DeviceArray {
  py::object owner;               // keeps the exporting object alive
  float* data = nullptr;           // the address (reinterpret for int32 arrays)
  std::vector<py::ssize_t> shape;
  int64_t size = 0;
  int device = -1;                // -1: empty array, no memory to place
  bool has_stream = false;        // v3: the producer's stream the data is ready on
  uintptr_t stream = 0;
};

DeviceArray device_array(const py::object& obj, const char* fn, const char* name, int rank, bool writable,
                         const char* typestr_wanted = "<f4", const char* dtype_name = "float32") {
  const std::string where = std::string(fn) + ": " + name;
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw py::type_error(where + ": expected a CuPy (device) array, got " + type_name(obj) +
                         (py::hasattr(obj, "__array_interface__") ? " (host memory: copy it with cupy.asarray)" : ""));
  py::object iface_obj = obj.attr("__cuda_array_interface__");
  if (!py::isinstance<py::dict>(iface_obj))
    throw py::type_error(where + ": __cuda_array_interface__ must be a dict, got " + type_name(iface_obj));
  py::dict iface = iface_obj.cast<py::dict>();
  for (const char* key : {"shape", "typestr", "data", "version"})
    if (!iface.contains(key))
      throw py::type_error(where + ": __cuda_array_interface__ lacks '" + key + "'");
  const int version = iface["version"].cast<int>();
  if (version < 0 || version > 3)
    throw py::type_error(where + ": __cuda_array_interface__ version " + std::to_string(version) +
                         " is not supported (0 to 3 are)");
  const std::string typestr = py::str(iface["typestr"]);
  if (typestr != typestr_wanted)
    throw py::type_error(where + " must have dtype " + dtype_name + " (typestr '" + typestr_wanted + "'), got typestr '" +
                         typestr + "'");
  DeviceArray a;
  a.owner = obj;
  for (const auto& d : iface["shape"].cast<py::tuple>()) a.shape.push_back(d.cast<py::ssize_t>());
  if (static_cast<int>(a.shape.size()) != rank)
    throw py::value_error(where + " must have rank " + std::to_string(rank) + ", got shape " + shape_str(a.shape));
  a.size = 1;
  for (py::ssize_t d : a.shape) a.size *= d;
  if (iface.contains("mask") && !iface["mask"].is_none())
    throw py::value_error(where + ": masked arrays (a 'mask' in __cuda_array_interface__) are not supported");
  if (iface.contains("strides") && !iface["strides"].is_none()) {
    // Strides of size-1 dimensions do not matter: CuPy may report any value there.
    py::tuple strides = iface["strides"].cast<py::tuple>();
    int64_t expect = sizeof(float);
    bool contiguous = static_cast<int>(strides.size()) == rank;
    for (int i = rank - 1; contiguous && i >= 0; --i) {
      if (a.shape[i] != 1 && strides[i].cast<int64_t>() != expect) contiguous = false;
      expect *= a.shape[i];
    }
    if (!contiguous && a.size > 0)
      throw py::value_error(where + " must be C-contiguous (use cupy.ascontiguousarray); got strides " +
                            std::string(py::str(strides)) + " for shape " + shape_str(a.shape));
  }
  py::tuple data = iface["data"].cast<py::tuple>();
  a.data = reinterpret_cast<float*>(data[0].cast<uintptr_t>());
  if (writable && data[1].cast<bool>()) throw py::value_error(where + " must be writeable, got a read-only array");
  if (iface.contains("stream") && !iface["stream"].is_none()) {
    a.has_stream = true;
    a.stream = iface["stream"].cast<uintptr_t>();
  }
  if (a.size > 0) {
    cudaPointerAttributes attr;
    const cudaError_t e = cudaPointerGetAttributes(&attr, a.data);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw py::value_error(where + ": its data pointer is not CUDA memory (" +
                            cuda_error("cudaPointerGetAttributes", e) + ")");
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
      throw py::type_error(where + ": expected device memory, got a pointer to host memory");
    a.device = attr.device;
  }
  return a;
}

// All arrays on one device; returns it (-1 when every array is empty).
int common_device(const char* fn, const std::vector<std::pair<const char*, const DeviceArray*>>& arrays) {
  int device = -1;
  const char* first = nullptr;
  for (const auto& [name, a] : arrays) {
    if (a->device < 0) continue;
    if (device < 0) {
      device = a->device;
      first = name;
    } else if (a->device != device) {
      throw py::value_error(std::string(fn) + ": all arrays must be on one device, got " + first + " on device " +
                            std::to_string(device) + " and " + name + " on device " + std::to_string(a->device));
    }
  }
  return device;
}

// Makes `device` current for the scope (the launchers and allocations work on the current device).
class DeviceScope {
 public:
  DeviceScope(int device, const char* fn) {
    cudaError_t e = cudaGetDevice(&previous_);
    if (e == cudaSuccess && device >= 0 && device != previous_) e = cudaSetDevice(device);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error(std::string(fn) + ": " + cuda_error("selecting the arrays' device", e));
    }
    restore_ = device >= 0 && device != previous_;
  }
  ~DeviceScope() {
    if (restore_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

// __cuda_array_interface__ stream values: 1 is the legacy default stream, 2 the per-thread default one;
// 0 (CuPy's Stream.null.ptr, or a caller's "default stream") is the legacy one too in this build.
cudaStream_t as_stream(uintptr_t value) {
  if (value == 0 || value == 1) return cudaStreamLegacy;
  if (value == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(value);
}

// Calls f() with CuPy's current device set to `device` (CuPy allocates and keeps streams per device).
template <class F>
py::object on_cupy_device(int device, F f) {
  py::module_ cupy = py::module_::import("cupy");
  py::object dev = cupy.attr("cuda").attr("Device")(device < 0 ? 0 : device);
  dev.attr("__enter__")();
  py::object result;
  try {
    result = f(cupy);
  } catch (...) {
    dev.attr("__exit__")(py::none(), py::none(), py::none());
    throw;
  }
  dev.attr("__exit__")(py::none(), py::none(), py::none());
  return result;
}

// The caller's stream, else CuPy's current stream on `device`.
uintptr_t stream_arg(const py::object& stream, int device, const char* fn) {
  if (!stream.is_none()) {
    if (!py::isinstance<py::int_>(stream) || py::isinstance<py::bool_>(stream))
      throw py::type_error(std::string(fn) + ": stream must be an int (a cudaStream_t, e.g. cupy's Stream.ptr) "
                           "or None, got " + type_name(stream));
    return stream.cast<uintptr_t>();
  }
  return on_cupy_device(device, [](py::module_& cupy) {
           return cupy.attr("cuda").attr("get_current_stream")().attr("ptr");
         }).cast<uintptr_t>();
}

// Orders our stream after the producer streams the inputs declare (interface v3).
void wait_for_producers(const std::vector<const DeviceArray*>& arrays, cudaStream_t stream, const char* fn) {
  for (const DeviceArray* a : arrays) {
    if (!a->has_stream || a->size == 0 || as_stream(a->stream) == stream) continue;
    cudaEvent_t ready;
    cudaError_t e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
    if (e == cudaSuccess) {
      e = cudaEventRecord(ready, as_stream(a->stream));
      if (e == cudaSuccess) e = cudaStreamWaitEvent(stream, ready, 0);
      cudaEventDestroy(ready);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error(std::string(fn) + ": " + cuda_error("waiting for an input's stream", e));
    }
  }
}

// out= when given (checked like an input, plus shape and writeability), else a new cupy.empty on `device`.
DeviceArray output(const py::object& out, const char* fn, const std::vector<py::ssize_t>& shape, int device,
                   const char* name = "out", const char* typestr = "<f4", const char* dtype_name = "float32") {
  py::object target = out;
  if (out.is_none())
    target = on_cupy_device(device, [&shape, dtype_name](py::module_& cupy) {
      return cupy.attr("empty")(py::cast(shape), dtype_name);
    });
  DeviceArray a = device_array(target, fn, name, static_cast<int>(shape.size()), true, typestr, dtype_name);
  if (a.shape != shape)
    throw py::value_error(std::string(fn) + ": " + name + " must have shape " + shape_str(shape) + ", got " +
                          shape_str(a.shape));
  if (device >= 0 && a.device >= 0 && a.device != device)
    throw py::value_error(std::string(fn) + ": " + name + " must be on the inputs' device " + std::to_string(device) +
                          ", got device " + std::to_string(a.device));
  return a;
}

// mask_type=None reads the tap set from the kernel's non-zeros: that needs the kernel on the host.
std::vector<float> kernel_on_host(const DeviceArray& k, cudaStream_t stream, const char* fn) {
  std::vector<float> host(static_cast<size_t>(k.size));
  if (k.size == 0) return host;
  cudaError_t e = cudaMemcpyAsync(host.data(), k.data, host.size() * sizeof(float), cudaMemcpyDeviceToHost, stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string(fn) + ": " + cuda_error("copying the kernel to the host", e));
  }
  return host;
}

void raise_if(const std::string& err, const char* fn) {
  if (!err.empty()) throw std::runtime_error(std::string(fn) + ": " + err);
}

py::object forward(const py::object& x_obj, const py::object& k_obj, const py::object& mask_type, int color_groups,
                   const py::object& dilation, const std::string& padding, const py::object& out,
                   const py::object& stream_obj) {
  const char* fn = "masked_conv2d_forward";
  require_device(fn);
  const DeviceArray x = device_array(x_obj, fn, "x", 4, false);
  const DeviceArray k = device_array(k_obj, fn, "kernel", 4, false);
  const int device = common_device(fn, {{"x", &x}, {"kernel", &k}});
  DeviceScope scope(device, fn);
  const cudaStream_t stream = as_stream(stream_arg(stream_obj, device, fn));
  wait_for_producers({&x, &k}, stream, fn);
  const std::vector<float> k_host = mask_type.is_none() ? kernel_on_host(k, stream, fn) : std::vector<float>();
  Problem p = make_problem(fn, x.shape[0], x.shape[1], x.shape[2], x.shape[3], static_cast<int>(k.shape[0]),
                           static_cast<int>(k.shape[1]), k.shape[2], k.shape[3], mask_type, color_groups, dilation,
                           padding, mask_type.is_none() ? k_host.data() : nullptr);
  const DeviceArray y = output(out, fn, {x.shape[0], p.geom.ho, p.geom.wo, k.shape[3]}, device);
  std::string err;
  {
    py::gil_scoped_release release;
    err = pcf::gpu::masked_conv2d_forward(p.taps, p.geom, x.data, k.data, y.data, stream);
  }
  raise_if(err, fn);
  return y.owner;
}

py::object backprop_input(const py::object& dy_obj, const py::object& k_obj, const py::object& input_hw,
                          const py::object& mask_type, int color_groups, const py::object& dilation,
                          const std::string& padding, const py::object& out, const py::object& stream_obj) {
  const char* fn = "masked_conv2d_backprop_input";
  require_device(fn);
  const DeviceArray dy = device_array(dy_obj, fn, "dy", 4, false);
  const DeviceArray k = device_array(k_obj, fn, "kernel", 4, false);
  auto [h, w] = pair_arg(input_hw, fn, "input_hw");
  if (h < 1 || w < 1)
    throw py::value_error(std::string(fn) + ": input_hw must be positive, got (" + std::to_string(h) + ", " +
                          std::to_string(w) + ")");
  const int device = common_device(fn, {{"dy", &dy}, {"kernel", &k}});
  DeviceScope scope(device, fn);
  const cudaStream_t stream = as_stream(stream_arg(stream_obj, device, fn));
  wait_for_producers({&dy, &k}, stream, fn);
  const int64_t cin = k.shape[2], cout = k.shape[3];
  const std::vector<float> k_host = mask_type.is_none() ? kernel_on_host(k, stream, fn) : std::vector<float>();
  Problem p = make_problem(fn, dy.shape[0], h, w, cin, static_cast<int>(k.shape[0]), static_cast<int>(k.shape[1]),
                           cin, cout, mask_type, color_groups, dilation, padding,
                           mask_type.is_none() ? k_host.data() : nullptr);
  const std::vector<py::ssize_t> want = {dy.shape[0], p.geom.ho, p.geom.wo, cout};
  if (dy.shape != want)
    throw py::value_error(std::string(fn) + ": dy must have shape " + shape_str(want) +
                          " (the forward output for input_hw and this kernel), got " + shape_str(dy.shape));
  const DeviceArray dx = output(out, fn, {dy.shape[0], h, w, cin}, device);
  std::string err;
  {
    py::gil_scoped_release release;
    err = pcf::gpu::masked_conv2d_backprop_input(p.taps, p.geom, dy.data, k.data, dx.data, stream);
  }
  raise_if(err, fn);
  return dx.owner;
}

py::object backprop_filter(const py::object& x_obj, const py::object& dy_obj, const py::object& kernel_hw,
                           const py::object& mask_type, int color_groups, const py::object& dilation,
                           const std::string& padding, const py::object& out, const py::object& stream_obj) {
  const char* fn = "masked_conv2d_backprop_filter";
  require_device(fn);
  const DeviceArray x = device_array(x_obj, fn, "x", 4, false);
  const DeviceArray dy = device_array(dy_obj, fn, "dy", 4, false);
  auto [kh, kw] = pair_arg(kernel_hw, fn, "kernel_hw");
  const int device = common_device(fn, {{"x", &x}, {"dy", &dy}});
  const int64_t cin = x.shape[3], cout = dy.shape[3];
  Problem p = make_problem(fn, x.shape[0], x.shape[1], x.shape[2], cin, kh, kw, cin, cout, mask_type, color_groups,
                           dilation, padding);
  const std::vector<py::ssize_t> want = {x.shape[0], p.geom.ho, p.geom.wo, cout};
  if (dy.shape != want)
    throw py::value_error(std::string(fn) + ": dy must have shape " + shape_str(want) +
                          " (batch and output size of the forward pass on x), got " + shape_str(dy.shape));
  DeviceScope scope(device, fn);
  const cudaStream_t stream = as_stream(stream_arg(stream_obj, device, fn));
  wait_for_producers({&x, &dy}, stream, fn);
  const DeviceArray dk = output(out, fn, {kh, kw, cin, cout}, device);
  std::string err;
  {
    py::gil_scoped_release release;
    err = pcf::gpu::masked_conv2d_backprop_filter(p.taps, p.geom, x.data, dy.data, dk.data, stream);
  }
  raise_if(err, fn);
  return dk.owner;
}

// ---- the cached sampler on the device (csrc/cuda/column_program.cu) ----

// A column program whose tables live on one device; built on the host from the spec, then uploaded once.
struct CudaProgram {
  std::unique_ptr<pcf::gpu::DeviceProgram> device;
  int64_t head_channels = 0, macs = 0, executed_macs = 0;
  const pcf::FlatProgram& host() const { return device->host(); }
};

CudaProgram* program_from_spec(const std::string& spec, const std::vector<py::object>& arrays, int64_t batch) {
  const char* fn = "ColumnProgram.from_spec";
  require_device(fn);
  pcf::ColumnProgram program = pcf_binding::program_from_spec(spec, arrays, batch, fn, /*flattenable=*/true);
  auto out = std::make_unique<CudaProgram>();
  out->head_channels = program.head_channels();
  out->macs = program.macs_per_position();
  out->executed_macs = program.executed_macs_per_position();
  std::string err;
  {
    py::gil_scoped_release release;
    err = pcf::gpu::DeviceProgram::create(pcf::flatten(program), &out->device);
  }
  raise_if(err, fn);
  return out.release();
}

void check_launch_shape(int images_per_block, int threads, const char* fn) {
  if (images_per_block < 0)
    throw py::value_error(std::string(fn) + ": images_per_block must be >= 1 (or 0: automatic), got " +
                          std::to_string(images_per_block));
  if (threads != 0 && (threads < 32 || threads > 256 || threads % 32 != 0))
    throw py::value_error(std::string(fn) + ": threads must be a multiple of 32 in [32, 256] (or 0: automatic), got " +
                          std::to_string(threads));
}

// Image completion: the known levels are checked on the host (-1 or a level the head draws) before the kernel
// trusts them, so a bad value is a ValueError, not a silently wrong image.
void check_known_on_host(const DeviceArray& known, const pcf::FlatProgram& h, cudaStream_t stream, const char* fn) {
  std::vector<int32_t> host(static_cast<size_t>(known.size));
  cudaError_t e = cudaMemcpyAsync(host.data(), known.data, host.size() * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                  stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string(fn) + ": " + cuda_error("copying known to the host", e));
  }
  const std::string err = pcf::checks::known_levels(fn, host.data(), known.size, h.draw_levels());
  if (!err.empty()) throw py::value_error(err);
}

py::tuple program_sample(const CudaProgram& p, const py::object& n_obj, const py::object& seed_obj,
                         const py::object& temperature_obj, const py::object& image_offset_obj,
                         const py::object& levels_out, const py::object& margins_out, const py::object& stream_obj,
                         int images_per_block, int threads, const py::object& known_obj) {
  const char* fn = "ColumnProgram.sample";
  const pcf::FlatProgram& hp = p.host();
  // The shape and every scalar from the program and checks.h, as _core's sample; no host caches here (the
  // ring lives on the device), so the memory rule counts the outputs only.
  const pcf_binding::SampleArgs a = pcf_binding::sample_args(fn, hp.h, hp.w, hp.c, hp.max_const_batch(), 0, n_obj,
                                                             seed_obj, temperature_obj, image_offset_obj);
  const int64_t n = a.n, image_offset = a.image_offset;
  const uint64_t seed = a.seed;
  const float t = a.temperature;
  check_launch_shape(images_per_block, threads, fn);
  const pcf::FlatProgram& h = p.host();
  const std::string err0 = h.check_call(n, images_per_block == 0 ? 1 : images_per_block, fn);
  if (!err0.empty()) throw py::value_error(err0);
  const int device = p.device->device();
  DeviceScope scope(device, fn);
  const std::vector<py::ssize_t> shape = {static_cast<py::ssize_t>(n), h.h, h.w, h.c};
  const DeviceArray levels = output(levels_out, fn, shape, device, "levels", "<i4", "int32");
  const DeviceArray margins = output(margins_out, fn, shape, device, "margins");
  const cudaStream_t stream = as_stream(stream_arg(stream_obj, device, fn));
  const int32_t* known_data = nullptr;
  if (!known_obj.is_none()) {
    const DeviceArray known = device_array(known_obj, fn, "known", 4, false, "<i4", "int32");
    if (known.shape != shape)
      throw py::value_error(std::string(fn) + ": known must have shape " + shape_str(shape) + ", got " +
                            shape_str(known.shape));
    if (known.device != device)
      throw py::value_error(std::string(fn) + ": known is on device " + std::to_string(known.device) +
                            ", the program on device " + std::to_string(device));
    wait_for_producers({&known}, stream, fn);
    check_known_on_host(known, h, stream, fn);
    known_data = reinterpret_cast<const int32_t*>(known.data);  // kept alive by known_obj until the call returns
  }
  std::string err;
  {
    py::gil_scoped_release release;
    err = p.device->sample(n, seed, t, image_offset, reinterpret_cast<int32_t*>(levels.data), margins.data,
                           images_per_block, threads, stream, known_data);
  }
  raise_if(err, fn);
  return py::make_tuple(levels.owner, margins.owner);
}

py::object program_teacher_forced(const CudaProgram& p, const py::object& image_obj, const py::object& out,
                                  const py::object& stream_obj, int images_per_block, int threads) {
  const char* fn = "ColumnProgram.teacher_forced";
  check_launch_shape(images_per_block, threads, fn);
  const DeviceArray image = device_array(image_obj, fn, "image", 4, false);
  const pcf::FlatProgram& h = p.host();
  if (image.shape[0] < 1 || image.shape[1] != h.h || image.shape[2] != h.w || image.shape[3] != h.c)
    throw py::value_error(std::string(fn) + ": image must have shape (n >= 1, " + std::to_string(h.h) + ", " +
                          std::to_string(h.w) + ", " + std::to_string(h.c) + "), got " + shape_str(image.shape));
  const int64_t n = image.shape[0];
  const std::string err0 = h.check_call(n, images_per_block == 0 ? 1 : images_per_block, fn);
  if (!err0.empty()) throw py::value_error(err0);
  const int device = p.device->device();
  if (image.device != device)
    throw py::value_error(std::string(fn) + ": image is on device " + std::to_string(image.device) +
                          ", the program on device " + std::to_string(device));
  DeviceScope scope(device, fn);
  const cudaStream_t stream = as_stream(stream_arg(stream_obj, device, fn));
  wait_for_producers({&image}, stream, fn);
  const DeviceArray head = output(out, fn, {image.shape[0], h.h, h.w, static_cast<py::ssize_t>(p.head_channels)},
                                  device);
  std::string err;
  {
    py::gil_scoped_release release;
    err = p.device->teacher_forced(image.data, n, head.data, images_per_block, threads, stream);
  }
  raise_if(err, fn);
  return head.owner;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pixelcnn_fast CUDA kernels: masked convolution over live taps and the cached sampler, on CuPy arrays (NHWC).";
  const char* stream_doc =
      " Runs on `stream` (an int cudaStream_t), by default CuPy's current stream on the arrays' device, after "
      "the streams the inputs' __cuda_array_interface__ declares; returns without waiting for the GPU.";
  m.def("masked_conv2d_forward", &forward, py::arg("x"), py::arg("kernel"), py::arg("mask_type"),
        py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1), py::arg("padding") = "same",
        py::arg("out") = py::none(), py::arg("stream") = py::none(),
        (std::string("y = masked conv of x (N,H,W,Cin) with kernel (kh,kw,Cin,Cout), live taps only. mask_type "
                     "None: the live taps and channel ranges are read from the kernel's non-zeros (a copy of the "
                     "kernel to the host).") + stream_doc).c_str());
  m.def("masked_conv2d_backprop_input", &backprop_input, py::arg("dy"), py::arg("kernel"), py::arg("input_hw"),
        py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("padding") = "same", py::arg("out") = py::none(), py::arg("stream") = py::none(),
        (std::string("Gradient of the masked conv w.r.t. its input.") + stream_doc).c_str());
  m.def("masked_conv2d_backprop_filter", &backprop_filter, py::arg("x"), py::arg("dy"), py::arg("kernel_hw"),
        py::arg("mask_type"), py::arg("color_groups") = 1, py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("padding") = "same", py::arg("out") = py::none(), py::arg("stream") = py::none(),
        (std::string("Gradient w.r.t. the kernel; entries of dead taps are exactly 0; deterministic.") + stream_doc)
            .c_str());
  py::class_<CudaProgram>(m, "ColumnProgram",
                          "A lowered model's column program on the GPU: the cached sampler as one kernel per call.")
      .def_static("from_spec", &program_from_spec, py::arg("spec"), py::arg("arrays"), py::arg("batch") = 0,
                  "Builds the program from its text spec and NumPy arrays (as _core.ColumnProgram.from_spec) "
                  "and uploads its tables to the current device.")
      .def("sample", &program_sample, py::arg("n"), py::arg("seed"), py::arg("temperature") = 1.0,
           py::arg("image_offset") = 0, py::arg("levels") = py::none(), py::arg("margins") = py::none(),
           py::arg("stream") = py::none(), py::arg("images_per_block") = 0, py::arg("threads") = 0,
           py::arg("known") = py::none(),
           (std::string("(levels int32, margins float32) CuPy arrays (n, H, W, C): the same images as the CPU "
                        "executor for a seed, up to draws within rounding of a CDF boundary. images_per_block / "
                        "threads: the launch shape (0: automatic). known (image completion, int32 (n, H, W, C) "
                        "CuPy): a level >= 0 is written instead of drawn, -1 draws.") + stream_doc).c_str())
      .def("teacher_forced", &program_teacher_forced, py::arg("image"), py::arg("out") = py::none(),
           py::arg("stream") = py::none(), py::arg("images_per_block") = 0, py::arg("threads") = 0,
           (std::string("Head values (n, H, W, head channels) at every position with `image` (n, H, W, C) float32 "
                        "fed in through the cached path.") + stream_doc).c_str())
      .def_property_readonly("image_shape", [](const CudaProgram& p) {
        return py::make_tuple(p.host().h, p.host().w, p.host().c);
      })
      .def_property_readonly("head_channels", [](const CudaProgram& p) { return p.head_channels; })
      .def_property_readonly("device", [](const CudaProgram& p) { return p.device->device(); })
      .def("macs_per_position", [](const CudaProgram& p) { return p.macs; })
      .def("executed_macs_per_position", [](const CudaProgram& p) { return p.executed_macs; })
      .def("auto_launch", [](const CudaProgram& p, int64_t n) {
        const int ipb = p.device->auto_images_per_block(n);
        return py::make_tuple(ipb, p.device->auto_threads(ipb));
      }, py::arg("n"), "(images_per_block, threads) the automatic launch shape picks for n images.");
  m.def("device_problem", &device_problem,
        "'' when a CUDA device can be used, else why not (no driver, no device). Safe without a GPU.");
}
