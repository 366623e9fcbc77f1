// metal-sim internals shared by runtime.cpp, foundation.cpp and metal.cpp.
#pragma once

#include <objc/runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>

#include "metal_sim.h"

namespace metalsim {

struct SimClass;

// Every simulated object starts with this header; `isa` must be first
// (metal-cpp's objc_object) so the dispatcher can find the class.
struct Obj {
  SimClass* isa;
  std::atomic<long> rc{1};
  SimClass* was{nullptr};  // the class before deallocation (zombies)
  Obj* label{nullptr};     // NSString*, for setLabel:/label on any object
};

// `isa` is read by GPU threads (is a referenced buffer still alive?) while
// another thread may deallocate the object: access it atomically (the field
// itself must stay a plain pointer, it is metal-cpp's objc_object layout).
inline SimClass* load_isa(const Obj* o) {
  return __atomic_load_n(&o->isa, __ATOMIC_ACQUIRE);
}
inline void store_isa(Obj* o, SimClass* c) {
  __atomic_store_n(&o->isa, c, __ATOMIC_RELEASE);
}

using Factory = Obj* (*)(SimClass*);
using Finalizer = void (*)(Obj*);  // runs the C++ destructor in place; memory is kept

struct SimClass : Obj {
  std::string name;
  SimClass* super{nullptr};
  bool meta{false};
  SimClass* instance_class{nullptr};  // for a metaclass: the class it describes
  std::unordered_map<SEL, void*> methods;
  Factory make{nullptr};
  Finalizer finalize{nullptr};
};

// Registry (runtime.cpp)
SimClass* define(const char* name, const char* super, Factory make, Finalizer fin);
SimClass* find_class(const char* name);
SEL sel(const char* name);
void method(SimClass* cls, const char* selector, void* imp);
void class_method(SimClass* cls, const char* selector, void* imp);
template <typename F>
inline void m(SimClass* cls, const char* s, F f) {
  method(cls, s, reinterpret_cast<void*>(f));
}
template <typename F>
inline void cm(SimClass* cls, const char* s, F f) {
  class_method(cls, s, reinterpret_cast<void*>(f));
}

template <typename T>
Obj* make_of(SimClass* cls) {
  T* o = new T();
  o->isa = cls;
  return o;
}
template <typename T>
void finalize_of(Obj* o) {
  static_cast<T*>(o)->~T();
}

// Object lifetime (runtime.cpp)
Obj* alloc_instance(SimClass* cls);  // +1
Obj* retain(Obj* o);
void release(Obj* o);
Obj* autorelease(Obj* o);
bool is_zombie(const Obj* o);
bool is_object(const void* p);  // a live or zombie simulated object
[[noreturn]] void fatal(const char* fmt, ...);
void warn(const char* fmt, ...);
void zombie_check_arg(const void* arg, const char* what);  // abort on a released argument

// Configuration and statistics (runtime.cpp)
struct Config {
  uint32_t gpu_delay_us{0};
  uint32_t gpu_jitter_us{0};
  uint64_t fail_cb_number{0};
  long fail_code{METALSIM_ERROR_INTERNAL};
  std::atomic<long> fail_next_code{0};
  uint32_t late_handlers_us{0};
  uint64_t memory_size{uint64_t(32) << 30};
  uint64_t alloc_limit{0};
  bool unknown_abort{true};
  uint32_t gpu_timeout_ms{20000};
  bool trace{false};
  bool zombie_abort{true};
};
Config& config();

struct Stats {
  std::atomic<uint64_t> messages{0}, committed{0}, completed{0}, failed{0}, invalid_resource{0},
      injected_failures{0}, dispatches{0}, buffers_live{0}, buffer_bytes_live{0}, objects_live{0},
      zombie_messages{0}, unknown_selectors{0}, handler_threads_seen{0};
};
Stats& stats();

long parse_error_code(const char* text);

// Foundation helpers (foundation.cpp)
Obj* make_string(const std::string& s);  // autoreleased NSString
Obj* new_string(const std::string& s);   // +1 NSString
const char* string_utf8(const Obj* s);
Obj* new_error(const char* domain, long code, const std::string& description);  // +1
Obj* new_array(Obj* const* objects, size_t count);                                 // +1, retains elements
std::string url_file_path(Obj* url);  // "" for nil
void init_foundation();

// Metal (metal.cpp)
void init_metal();

}  // namespace metalsim
