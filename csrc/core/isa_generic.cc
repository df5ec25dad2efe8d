// Core (framework-free C++17): the microkernels built for SSE2 (any x86-64); flags set by setup.py.
#define PCF_ISA_NS isa_generic
#define PCF_ISA_NAME "generic"
#define PCF_VL 4
#define PCF_NV_MAX 2
#define PCF_MR 6
#include "kernels_isa.inc"
