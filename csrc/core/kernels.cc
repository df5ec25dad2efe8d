// Core (framework-free C++17): picks the microkernel build for the CPU at hand, once.
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "kernels.h"

namespace pcf {
namespace isa_avx512 { extern const Kernels kKernels; }
namespace isa_avx2 { extern const Kernels kKernels; }
namespace isa_generic { extern const Kernels kKernels; }

static bool cpu_has(const char* isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return std::strcmp(isa, "generic") == 0;
}

const Kernels* kernels_by_name(const char* isa) {
  if (isa == nullptr || !cpu_has(isa)) return nullptr;
  if (std::strcmp(isa, "avx512") == 0) return &isa_avx512::kKernels;
  if (std::strcmp(isa, "avx2") == 0) return &isa_avx2::kKernels;
  if (std::strcmp(isa, "generic") == 0) return &isa_generic::kKernels;
  return nullptr;
}

const Kernels& active_kernels() {
  // PIXELCNN_FAST_ISA=avx2|generic forces a narrower build (tests run every variant this CPU has).
  static const Kernels* chosen = [] {
    const char* forced = std::getenv("PIXELCNN_FAST_ISA");
    if (forced != nullptr && kernels_by_name(forced) != nullptr) return kernels_by_name(forced);
    for (const char* isa : {"avx512", "avx2"})
      if (const Kernels* k = kernels_by_name(isa)) return k;
    return &isa_generic::kKernels;
  }();
  return *chosen;
}

}  // namespace pcf
