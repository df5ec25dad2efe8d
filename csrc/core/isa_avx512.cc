// Core (framework-free C++17): the microkernels built for AVX-512F (Skylake-X, Zen 4 and later); flags set by setup.py.
#define PCF_ISA_NS isa_avx512
#define PCF_ISA_NAME "avx512"
#define PCF_VL 16
#define PCF_NV_MAX 4
#define PCF_MR 6
#define PCF_VREGS 32  // vector registers
#define PCF_WIDE_NV1 8  // vectors of a one-row / two-row tile across panels (kernels_isa.inc, gemm_wide)
#define PCF_WIDE_NV2 8
#define PCF_TALL_MR 8  // 32 vector registers: 8-row x 2-vector tiles for M a multiple of 8 (kernels_isa.inc, gemm_tall)
#include "kernels_isa.inc"
