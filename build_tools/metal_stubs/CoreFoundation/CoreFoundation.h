// Stand-in: the CoreFoundation types metal-cpp's Foundation layer is built on.
#pragma once
#include <stdint.h>
#include <stdbool.h>
typedef double CFTimeInterval;
typedef double CFAbsoluteTime;
typedef long CFIndex;
typedef unsigned long CFTypeID;
typedef unsigned long CFOptionFlags;
typedef unsigned long CFHashCode;
typedef const void* CFTypeRef;
typedef const struct __CFString* CFStringRef;
typedef const struct __CFAllocator* CFAllocatorRef;
typedef struct __CFRunLoop* CFRunLoopRef;
typedef struct {
  CFIndex location;
  CFIndex length;
} CFRange;
typedef enum : CFIndex {
  kCFCompareLessThan = -1,
  kCFCompareEqualTo = 0,
  kCFCompareGreaterThan = 1
} CFComparisonResult;
#ifdef __cplusplus
extern "C" {
#endif
CFTypeRef CFRetain(CFTypeRef cf);
void CFRelease(CFTypeRef cf);
CFStringRef __CFStringMakeConstantString(const char* cStr);
#ifdef __cplusplus
}
#endif
