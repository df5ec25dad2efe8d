// Core (framework-free C++17): the microkernels built for AVX2 + FMA (Haswell, Zen 1 and later); flags set by setup.py.
#define PCF_ISA_NS isa_avx2
#define PCF_ISA_NAME "avx2"
#define PCF_VL 8
#define PCF_NV_MAX 2
#define PCF_MR 6
#define PCF_VREGS 16  // vector registers
#define PCF_WIDE_NV1 8  // vectors of a one-row / two-row tile across panels (kernels_isa.inc, gemm_wide)
#define PCF_WIDE_NV2 4
#define PCF_WIDE_NV3 4  // 12 sums: B is read from memory operands (no registers left to hold it)
#include "kernels_isa.inc"
