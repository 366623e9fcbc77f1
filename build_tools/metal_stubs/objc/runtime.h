// Stand-in for the Objective-C runtime interface metal-cpp uses (declarations only).
#pragma once
#include <stddef.h>
#include <stdint.h>
typedef struct objc_class* Class;
struct objc_object {
  Class isa;
};
typedef struct objc_object* id;
typedef struct objc_selector* SEL;
typedef struct objc_object Protocol;
typedef bool BOOL; // arm64: BOOL is bool
#ifdef __cplusplus
extern "C" {
#endif
Class objc_lookUpClass(const char* name);
Protocol* objc_getProtocol(const char* name);
SEL sel_registerName(const char* str);
const char* sel_getName(SEL sel);
#ifdef __cplusplus
}
#endif
