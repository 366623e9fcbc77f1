// Stand-in: the page size globals of the Mach VM interface (libmetalsim defines vm_page_size: 16 KiB,
// Apple silicon's page).
#pragma once
#include <mach/mach.h>
#ifdef __cplusplus
extern "C" {
#endif
extern vm_size_t vm_page_size;
extern vm_size_t vm_page_mask;
extern int vm_page_shift;
#ifdef __cplusplus
}
#endif
