// Stand-in for the Objective-C runtime interface metal-cpp uses (libmetalsim implements it in runtime.cpp).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
typedef struct objc_class* Class;
struct objc_object {
  Class isa;
};
typedef struct objc_object* id;
typedef struct objc_selector* SEL;
typedef struct objc_object Protocol;
typedef id (*IMP)(id, SEL, ...);
// The one place the two users of these headers differ. check-metal type-checks for arm64 macOS,
// where BOOL is bool; the simulated runtime (compiled with -DMLX_FORK_METAL_SIM) runs on x86-64,
// whose Objective-C ABI has BOOL as signed char.
#ifdef MLX_FORK_METAL_SIM
typedef signed char BOOL;
#else
typedef bool BOOL;
#endif
#ifdef __cplusplus
extern "C" {
#endif
Class objc_lookUpClass(const char* name);
Class objc_getClass(const char* name);
Protocol* objc_getProtocol(const char* name);
SEL sel_registerName(const char* name);
SEL sel_getUid(const char* name);
const char* sel_getName(SEL sel);
const char* class_getName(Class cls);
Class object_getClass(id obj);
#ifdef __cplusplus
}
#endif
