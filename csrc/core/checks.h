// Core (framework-free C++17): the sampler's argument rules, one function per rule and one message, used by
// every C++ front door (the pybind modules _core and _cuda, the TF sampler kernels). pixelcnn_fast/checks.py
// is the Python twin with the same words (tests/test_robustness.py compares the two on every front door).
// Each function returns "" when the value is fine, else the message "<where>: <argument> must be ..., got
// <value>"; the adapter raises it as its framework's error (ValueError, InvalidArgument). Values print as
// Python prints them (py_repr), so a message does not depend on the door it came through.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace pcf {
namespace checks {

// Python's repr() of a float: shortest round-trip digits, fixed notation for 1e-4 <= |x| < 1e16.
inline std::string py_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  int p = 1;
  for (; p < 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*e", p - 1, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::snprintf(buf, sizeof buf, "%.*e", p - 1, x);
  const std::string s(buf);
  const size_t epos = s.find('e');
  const int e = std::atoi(s.c_str() + epos + 1);
  std::string digits;
  for (size_t i = 0; i < epos; ++i)
    if (s[i] >= '0' && s[i] <= '9') digits += s[i];
  std::string out;
  if (e >= -4 && e < 16) {
    if (e >= 0) {
      if (static_cast<int>(digits.size()) <= e + 1)
        out = digits + std::string(e + 1 - digits.size(), '0') + ".0";
      else
        out = digits.substr(0, e + 1) + "." + digits.substr(e + 1);
    } else {
      out = "0." + std::string(-e - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", e < 0 ? '-' : '+', std::abs(e));
    out += eb;
  }
  return (x < 0 ? "-" : "") + out;
}

inline std::string prefix(const std::string& where) { return where.empty() ? "" : where + ": "; }

// The temperature divides the logits as a float32: positive and finite before and after the conversion.
inline std::string temperature(const std::string& where, double t) {
  const float tf = static_cast<float>(t);
  if (t > 0.0 && std::isfinite(t) && tf > 0.0f && std::isfinite(tf)) return "";
  return prefix(where) + "temperature must be a positive finite float32, got " + py_repr(t);
}

// n images per call: at least one, and image indices (the Philox counter's image word) are 32-bit.
inline std::string count(const std::string& where, int64_t n) {
  if (n >= 1 && n < (int64_t(1) << 32)) return "";
  return prefix(where) + "n must be an integer in [1, 2**32), got " + std::to_string(n);
}

// The call's first image index: images image_offset .. image_offset + n - 1 must all be 32-bit indices.
inline std::string image_offset(const std::string& where, int64_t offset, int64_t n) {
  if (offset < 0 || offset >= (int64_t(1) << 32))
    return prefix(where) + "image_offset must be an integer in [0, 2**32), got " + std::to_string(offset);
  if (offset + n > (int64_t(1) << 32))
    return prefix(where) + "image_offset + n must be <= 2**32 (image indices are 32-bit), got " +
           std::to_string(offset) + " + " + std::to_string(n);
  return "";
}

// A program whose per-image constants (condition embeddings) were evaluated for `program_batch` images draws
// exactly that many (0 or 1: the constants are shared and any n works).
inline std::string batch(const std::string& where, int64_t program_batch, int64_t n) {
  if (program_batch <= 1 || program_batch == n) return "";
  return prefix(where) + "n must equal the " + std::to_string(program_batch) +
         " images the program's per-image constants were built for, got " + std::to_string(n);
}

// Image completion: known[k] (k < count) must be -1 (draw) or a level in [0, levels) of the head. Every
// executor checks it before it trusts a known level (the CUDA module on a host copy).
inline std::string known_levels(const std::string& where, const int32_t* known, int64_t count, int levels) {
  for (int64_t k = 0; k < count; ++k)
    if (known[k] < -1 || known[k] >= levels)
      return prefix(where) + "known levels must be -1 (draw) or in [0, " + std::to_string(levels) + "), got " +
             std::to_string(known[k]) + " at flat index " + std::to_string(k);
  return "";
}

// Physical memory in bytes (0 when unknown: no limit is applied).
inline uint64_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
#endif
  return 0;
}

// Refuses a call whose outputs and caches could never fit, before anything is allocated: n images of
// h x w x c levels (int32) and margins (float32), each image's ring caches (cache_floats_per_image floats)
// and the head values of a teacher-forced call (head_floats_per_image, 0 for sampling). Computed in
// long double so that no product overflows.
inline std::string memory(const std::string& where, int64_t n, int64_t h, int64_t w, int64_t c,
                          int64_t cache_floats_per_image, int64_t head_floats_per_image = 0,
                          uint64_t limit = physical_memory_bytes()) {
  const long double per_image = static_cast<long double>(h) * w * c * 8.0L +
                                static_cast<long double>(cache_floats_per_image) * 4.0L +
                                static_cast<long double>(head_floats_per_image) * 4.0L;
  const long double need = per_image * static_cast<long double>(n);
  if (limit == 0 || need <= static_cast<long double>(limit)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4Lg", need);
  return prefix(where) + "n=" + std::to_string(n) + " images of " + std::to_string(h) + "x" + std::to_string(w) +
         "x" + std::to_string(c) + " would need " + buf + " bytes for outputs and caches, more than this " +
         "machine's memory (" + std::to_string(limit) + " bytes)";
}

}  // namespace checks
}  // namespace pcf
