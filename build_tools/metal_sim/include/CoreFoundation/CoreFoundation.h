/* metal-sim: the CoreFoundation types metal-cpp names. */
#pragma once
#include <stdint.h>
typedef double CFTimeInterval;
typedef const struct __CFString* CFStringRef;
typedef signed long CFIndex;
typedef unsigned long CFTypeID;
#ifdef __cplusplus
extern "C" {
#endif
CFStringRef __CFStringMakeConstantString(const char* cStr);
#ifdef __cplusplus
}
#endif
