// Stand-in: message dispatch entry points (libmetalsim: x86-64 assembly in trampolines.S).
// Declared without a prototype, as Apple's runtime does with OBJC_OLD_DISPATCH_PROTOTYPES=0:
// every call site casts to the exact type.
#pragma once
#include <objc/runtime.h>
#ifdef __cplusplus
extern "C" {
#endif
void objc_msgSend(void);
void objc_msgSend_stret(void);
void objc_msgSend_fpret(void);
#ifdef __cplusplus
}
#endif
