// Stand-in: the page size globals of the Mach VM interface.
#pragma once
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
extern uintptr_t vm_page_size;
extern uintptr_t vm_page_mask;
extern int vm_page_shift;
#ifdef __cplusplus
}
#endif
