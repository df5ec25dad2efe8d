// Core (framework-free C++17, CUDA-compatible): PCF_HOST_DEVICE marks a function callable from host and device.
//
// Per-element math that the CPU core and the CUDA kernels share (Philox, level drawing) is written once in
// headers and marked with it, so the CPU tests exercise the very code the GPU runs (docs/SEMANTICS.md, layout).
#pragma once

#if defined(__CUDACC__)
#define PCF_HOST_DEVICE __host__ __device__
#else
#define PCF_HOST_DEVICE
#endif
