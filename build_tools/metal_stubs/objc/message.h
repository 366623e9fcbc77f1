// Stand-in: message dispatch entry points, untyped as with OBJC_OLD_DISPATCH_PROTOTYPES=0.
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
