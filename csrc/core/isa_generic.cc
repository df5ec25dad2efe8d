// Core (framework-free C++17): the microkernels built for SSE2 (any x86-64); flags set by setup.py.
#define PCF_ISA_NS isa_generic
#define PCF_ISA_NAME "generic"
#define PCF_VL 4
#define PCF_NV_MAX 2
#define PCF_MR 6
#define PCF_VREGS 16  // vector registers
// Two-panel wide tiles, as AVX-512's (kernels_isa.inc, gemm_wide): 16 registers hold 4 + 4 (one row) or 8 + 4 + 2.
#define PCF_WIDE_NV1 4
#define PCF_WIDE_NV2 4
#include "kernels_isa.inc"
