// Stand-in: glibc >= 2.32 ships no sys/sysctl.h; MLX uses sysctlbyname only (hw.memsize,
// iogpu.rsrc_limit; libmetalsim answers from the simulated machine).
#pragma once
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
int sysctlbyname(const char* name, void* oldp, size_t* oldlenp, void* newp, size_t newlen);
#ifdef __cplusplus
}
#endif
