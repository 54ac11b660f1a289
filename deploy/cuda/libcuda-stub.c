/*
 * Build-only stand-in for the NVIDIA driver library (libcuda.so.1).
 *
 * The driver is in no PyPI wheel, but cudarc (candle's CUDA backend, built by
 * candle-core with cudarc's `dynamic-linking` feature) links `-lcuda`, so the
 * linker needs a libcuda.so that defines every cu* symbol cudarc declares.
 * deploy/cuda/build-cuda.sh generates stub-symbols.h (one STUB(name) line per
 * `pub unsafe fn cu*` in the locked cudarc's src/driver/sys/mod.rs) and
 * compiles this file with it, SONAME libcuda.so.1, into
 * <toolkit>/lib64/stubs/.
 *
 * Every call fails with CUDA_ERROR_NO_DEVICE (100), so a binary run against
 * this stub reports "no CUDA device" instead of crashing. It is never to be
 * shipped: on a GPU host the real driver's libcuda.so.1 is loaded instead.
 */
#include <stddef.h>

#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_NO_DEVICE 100

/* Return type CUresult is a C enum: int on every ABI we build for. */
#define STUB(name) int name(void) { return CUDA_ERROR_NO_DEVICE; }
#include "stub-symbols.h"
#undef STUB

/* These two must succeed so cudarc's error Display can say what happened. */
int cuGetErrorString(int error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (error == CUDA_ERROR_NO_DEVICE)
        *pStr = "no CUDA-capable device is detected (this is the build-time stub "
                "libcuda.so.1 from deploy/cuda: no NVIDIA driver is installed)";
    else
        *pStr = "unknown error (build-time stub libcuda.so.1 from deploy/cuda: "
                "no NVIDIA driver is installed)";
    return 0;
}

int cuGetErrorName(int error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pStr = error == CUDA_ERROR_NO_DEVICE ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN";
    return 0;
}
