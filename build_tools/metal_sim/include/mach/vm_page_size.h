/* metal-sim: Apple-silicon page size (16 KiB), defined in libmetalsim. */
#pragma once
#include <mach/mach.h>
#ifdef __cplusplus
extern "C" {
#endif
extern vm_size_t vm_page_size;
#ifdef __cplusplus
}
#endif
