/* metal-sim: the subset of the Objective-C runtime API that metal-cpp uses.
 * Implemented by build_tools/metal_sim/runtime.cpp (not by an Objective-C runtime). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct objc_class* Class;
struct objc_object {
  Class isa;
};
typedef struct objc_object* id;
typedef struct objc_selector* SEL;
typedef struct objc_object Protocol;
typedef id (*IMP)(id, SEL, ...);
typedef signed char BOOL;

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
