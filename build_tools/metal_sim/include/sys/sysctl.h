/* metal-sim: sysctlbyname as MLX uses it (hw.memsize, iogpu.rsrc_limit),
 * answered by libmetalsim from the simulated machine. */
#pragma once
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
int sysctlbyname(const char* name, void* oldp, size_t* oldlenp, void* newp, size_t newlen);
#ifdef __cplusplus
}
#endif
