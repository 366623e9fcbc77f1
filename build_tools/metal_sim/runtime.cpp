// metal-sim: the Objective-C runtime part of the fake.
//
// Classes and selectors are registered here; objc_msgSend (trampolines.S)
// asks metalsim_lookup for the implementation of (receiver's class, selector).
// Objects are reference counted like Foundation objects; a deallocated
// object keeps its memory and becomes a zombie, so a later message to it is
// reported (like NSZombieEnabled) instead of being undefined behaviour.

#include "sim.hpp"

#include <cerrno>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <unordered_set>
#include <vector>

#include <mach/vm_page_size.h>
#include <sys/sysctl.h>

// Apple silicon pages are 16 KiB; MLX rounds allocations to vm_page_size.
extern "C" vm_size_t vm_page_size = 16384;

extern "C" void* metalsim_lookup(metalsim::Obj* self, SEL s);

namespace metalsim {

namespace {

std::shared_mutex& registry_mutex() {
  static auto* m = new std::shared_mutex;
  return *m;
}
std::unordered_map<std::string, SimClass*>& classes_by_name() {
  static auto* m = new std::unordered_map<std::string, SimClass*>;
  return *m;
}
std::unordered_set<const SimClass*>& known_classes() {
  static auto* s = new std::unordered_set<const SimClass*>;
  return *s;
}
std::mutex& sel_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::unordered_map<std::string, const char*>& selectors() {
  static auto* m = new std::unordered_map<std::string, const char*>;
  return *m;
}

SimClass* g_root = nullptr;    // NSObject
SimClass* g_zombie = nullptr;  // isa of deallocated objects
SimClass* g_pool_cls = nullptr;

std::once_flag g_init_once;
void initialize();

inline void ensure_init() {
  std::call_once(g_init_once, initialize);
}

long zero_imp() {
  return 0;
}

std::mutex& unknown_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::unordered_set<std::string>& unknown_seen() {
  static auto* s = new std::unordered_set<std::string>;
  return *s;
}

// --- autorelease pools ---------------------------------------------------
// A plain pointer in TLS (no destructor): MLX drains pools from static
// destructors, after C++ thread_local objects of the thread are gone.
struct Pool : Obj {
  std::vector<Obj*> objects;
};
__thread std::vector<Pool*>* t_pools = nullptr;
std::atomic<bool> g_warned_no_pool{false};

std::vector<Pool*>& pools() {
  if (!t_pools) {
    t_pools = new std::vector<Pool*>();
  }
  return *t_pools;
}

void drain_pool(Pool* p) {
  auto& st = pools();
  auto it = st.end();
  for (auto i = st.begin(); i != st.end(); ++i) {
    if (*i == p) {
      it = i;
    }
  }
  if (it == st.end()) {
    fatal("autorelease pool %p drained on a thread that does not own it (or drained twice)", (void*)p);
  }
  // Drain pools pushed after this one first (as Foundation does).
  while (!st.empty()) {
    Pool* top = st.back();
    // Releasing may autorelease more objects into `top`; loop until empty.
    while (!top->objects.empty()) {
      std::vector<Obj*> objs;
      objs.swap(top->objects);
      for (Obj* o : objs) {
        release(o);
      }
    }
    st.pop_back();
    top->was = top->isa;
    store_isa(top, g_zombie);
    stats().objects_live--;
    if (top == p) {
      break;
    }
  }
}

// NSAutoreleasePool methods
Obj* pool_init(Obj* self, SEL) {
  pools().push_back(static_cast<Pool*>(self));
  return self;
}
void pool_release(Obj* self, SEL) {
  drain_pool(static_cast<Pool*>(self));
}
Obj* pool_retain(Obj* self, SEL) {
  fatal("-[NSAutoreleasePool retain]: pools cannot be retained");
}
Obj* pool_autorelease(Obj* self, SEL) {
  fatal("-[NSAutoreleasePool autorelease]: pools cannot be autoreleased");
}
void pool_add_object(SimClass*, SEL, Obj* o) {
  autorelease(o);
}

// --- NSObject ------------------------------------------------------------
Obj* cls_alloc(SimClass* cls, SEL) {
  return alloc_instance(cls->instance_class);
}
Obj* cls_new(SimClass* cls, SEL) {
  Obj* o = alloc_instance(cls->instance_class);
  SEL init = sel("init");
  return reinterpret_cast<Obj* (*)(Obj*, SEL)>(metalsim_lookup(o, init))(o, init);
}
Obj* obj_init(Obj* self, SEL) {
  return self;
}
Obj* obj_retain(Obj* self, SEL) {
  return retain(self);
}
void obj_release(Obj* self, SEL) {
  release(self);
}
Obj* obj_autorelease(Obj* self, SEL) {
  return autorelease(self);
}
unsigned long obj_retain_count(Obj* self, SEL) {
  return static_cast<unsigned long>(self->rc.load());
}
unsigned long obj_hash(Obj* self, SEL) {
  return reinterpret_cast<uintptr_t>(self);
}
bool obj_is_equal(Obj* self, SEL, Obj* other) {
  return self == other;
}
Obj* obj_description(Obj* self, SEL) {
  char buf[256];
  snprintf(buf, sizeof buf, "<%s: %p>", self->isa->name.c_str(), (void*)self);
  return make_string(buf);
}
Obj* obj_class(Obj* self, SEL) {
  return self->isa;
}
bool obj_responds(Obj* self, SEL, SEL s) {
  for (SimClass* c = self->isa; c; c = c->super) {
    std::shared_lock lk(registry_mutex());
    if (c->methods.count(s)) {
      return true;
    }
  }
  return false;
}
Obj* obj_method_signature(Obj*, SEL, SEL) {
  return nullptr;  // no NSMethodSignature: sendMessageSafe then returns 0 for unknown selectors
}
Obj* obj_label(Obj* self, SEL) {
  return self->label;
}
void obj_set_label(Obj* self, SEL, Obj* label) {
  zombie_check_arg(label, "setLabel:");
  Obj* old = self->label;
  self->label = label ? retain(label) : nullptr;
  if (old) {
    release(old);
  }
}
bool obj_is_kind(Obj* self, SEL, SimClass* cls) {
  for (SimClass* c = self->isa; c; c = c->super) {
    if (c == cls) {
      return true;
    }
  }
  return false;
}
Obj* obj_copy(Obj* self, SEL) {
  return retain(self);  // immutable objects: copy is retain
}

}  // namespace

Config& config() {
  static auto* c = new Config;
  return *c;
}

Stats& stats() {
  static auto* s = new Stats;
  return *s;
}

void fatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("metal-sim: FATAL: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
  abort();
}

void warn(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("metal-sim: warning: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
}

SEL sel(const char* name) {
  std::lock_guard lk(sel_mutex());
  auto& m = selectors();
  auto it = m.find(name);
  if (it != m.end()) {
    return (SEL)it->second;
  }
  char* copy = strdup(name);
  m.emplace(copy, copy);
  return (SEL)copy;
}

SimClass* find_class(const char* name) {
  std::shared_lock lk(registry_mutex());
  auto it = classes_by_name().find(name);
  return it == classes_by_name().end() ? nullptr : it->second;
}

SimClass* define(const char* name, const char* super_name, Factory make, Finalizer fin) {
  SimClass* super = super_name ? find_class(super_name) : nullptr;
  if (super_name && !super) {
    fatal("define %s: unknown superclass %s", name, super_name);
  }
  std::unique_lock lk(registry_mutex());
  if (classes_by_name().count(name)) {
    fatal("class %s defined twice", name);
  }
  auto* meta = new SimClass();
  meta->name = std::string(name) + " (metaclass)";
  meta->meta = true;
  meta->rc = 1L << 40;
  auto* cls = new SimClass();
  cls->name = name;
  cls->isa = meta;
  cls->rc = 1L << 40;
  cls->super = super;
  cls->make = make ? make : (super ? super->make : nullptr);
  cls->finalize = fin;
  cls->instance_class = cls;
  meta->instance_class = cls;
  // A metaclass inherits from the superclass's metaclass; the root
  // metaclass inherits from the root class (so classes answer retain etc.).
  meta->super = super ? static_cast<SimClass*>(super->isa) : cls;
  meta->isa = nullptr;
  classes_by_name()[name] = cls;
  known_classes().insert(cls);
  known_classes().insert(meta);
  return cls;
}

void method(SimClass* cls, const char* selector, void* imp) {
  SEL s = sel(selector);
  std::unique_lock lk(registry_mutex());
  cls->methods[s] = imp;
}

void class_method(SimClass* cls, const char* selector, void* imp) {
  method(static_cast<SimClass*>(cls->isa), selector, imp);
}

Obj* alloc_instance(SimClass* cls) {
  if (!cls->make) {
    fatal("+[%s alloc]: class cannot be instantiated in the simulator", cls->name.c_str());
  }
  Obj* o = cls->make(cls);
  o->isa = cls;
  o->rc = 1;
  stats().objects_live++;
  return o;
}

bool is_zombie(const Obj* o) {
  return o && load_isa(o) == g_zombie;
}

bool is_object(const void* p) {
  if (!p) {
    return false;
  }
  SimClass* isa = load_isa(static_cast<const Obj*>(p));
  if (isa == g_zombie) {
    return true;
  }
  std::shared_lock lk(registry_mutex());
  return known_classes().count(isa) > 0;
}

void zombie_check_arg(const void* arg, const char* what) {
  if (arg && is_zombie(static_cast<const Obj*>(arg))) {
    auto* o = static_cast<const Obj*>(arg);
    stats().zombie_messages++;
    if (config().zombie_abort) {
      fatal("%s was passed a deallocated %s (%p): use after release", what,
            o->was ? o->was->name.c_str() : "object", arg);
    }
    warn("%s was passed a deallocated %s (%p)", what, o->was ? o->was->name.c_str() : "object", arg);
  }
}

Obj* retain(Obj* o) {
  if (!o) {
    return o;
  }
  long before = o->rc.fetch_add(1);
  if (before <= 0 || load_isa(o) == g_zombie) {
    fatal("retain of a deallocated %s (%p)", o->was ? o->was->name.c_str() : "object", (void*)o);
  }
  return o;
}

void release(Obj* o) {
  if (!o) {
    return;
  }
  if (load_isa(o) == g_zombie) {
    stats().zombie_messages++;
    fatal("release of a deallocated %s (%p): over-release", o->was ? o->was->name.c_str() : "object",
          (void*)o);
  }
  long after = o->rc.fetch_sub(1) - 1;
  if (after > 0) {
    return;
  }
  if (after < 0) {
    fatal("release of %s (%p) with retain count 0", o->isa->name.c_str(), (void*)o);
  }
  SimClass* cls = o->isa;
  for (SimClass* c = cls; c; c = c->super) {
    if (c->finalize) {
      c->finalize(o);
      break;
    }
  }
  Obj* label = o->label;
  o->label = nullptr;
  o->was = cls;
  store_isa(o, g_zombie);
  stats().objects_live--;
  if (label) {
    release(label);
  }
}

Obj* autorelease(Obj* o) {
  if (!o) {
    return o;
  }
  auto& st = pools();
  if (st.empty()) {
    if (!g_warned_no_pool.exchange(true)) {
      warn("%s %p autoreleased with no pool in place - just leaking", o->isa->name.c_str(), (void*)o);
    }
    return o;
  }
  st.back()->objects.push_back(o);
  return o;
}

long parse_error_code(const char* text) {
  if (!text || !*text) {
    return METALSIM_ERROR_INTERNAL;
  }
  std::string t(text);
  if (t == "oom" || t == "out-of-memory") return METALSIM_ERROR_OUT_OF_MEMORY;
  if (t == "invalid" || t == "invalid-resource") return METALSIM_ERROR_INVALID_RESOURCE;
  if (t == "timeout") return METALSIM_ERROR_TIMEOUT;
  if (t == "internal") return METALSIM_ERROR_INTERNAL;
  if (t == "pagefault") return METALSIM_ERROR_PAGE_FAULT;
  char* end = nullptr;
  long v = strtol(text, &end, 10);
  if (end && *end == 0 && v > 0) return v;
  fatal("MLX_SIM_FAIL_CODE=%s: expected oom, invalid, timeout, internal, pagefault or a number", text);
}

namespace {

uint64_t env_u64(const char* name, uint64_t dflt) {
  const char* v = getenv(name);
  if (!v || !*v) {
    return dflt;
  }
  char* end = nullptr;
  unsigned long long x = strtoull(v, &end, 10);
  if (!end || *end) {
    fatal("%s=%s: expected a non-negative integer", name, v);
  }
  return x;
}

void read_env() {
  auto& c = config();
  c.gpu_delay_us = env_u64("MLX_SIM_GPU_DELAY_US", 0);
  c.gpu_jitter_us = env_u64("MLX_SIM_GPU_JITTER_US", 0);
  c.fail_cb_number = env_u64("MLX_SIM_FAIL_CB", 0);
  if (const char* code = getenv("MLX_SIM_FAIL_CODE")) {
    c.fail_code = parse_error_code(code);
  }
  c.late_handlers_us = env_u64("MLX_SIM_LATE_HANDLERS_US", 0);
  c.memory_size = env_u64("MLX_SIM_MEMORY_SIZE", c.memory_size);
  c.alloc_limit = env_u64("MLX_SIM_ALLOC_LIMIT", 0);
  c.gpu_timeout_ms = env_u64("MLX_SIM_GPU_TIMEOUT_MS", c.gpu_timeout_ms);
  c.trace = env_u64("MLX_SIM_TRACE", 0) != 0;
  if (const char* u = getenv("MLX_SIM_UNKNOWN_SELECTOR")) {
    if (!strcmp(u, "warn")) {
      c.unknown_abort = false;
    } else if (strcmp(u, "abort") != 0) {
      fatal("MLX_SIM_UNKNOWN_SELECTOR=%s: expected abort or warn", u);
    }
  }
}

void initialize() {
  read_env();
  g_root = define("NSObject", nullptr, make_of<Obj>, nullptr);
  g_zombie = define("metal-sim zombie", nullptr, nullptr, nullptr);
  cm(g_root, "alloc", cls_alloc);
  cm(g_root, "allocWithZone:", cls_alloc);
  cm(g_root, "new", cls_new);
  m(g_root, "init", obj_init);
  m(g_root, "retain", obj_retain);
  m(g_root, "release", obj_release);
  m(g_root, "autorelease", obj_autorelease);
  m(g_root, "retainCount", obj_retain_count);
  m(g_root, "hash", obj_hash);
  m(g_root, "isEqual:", obj_is_equal);
  m(g_root, "description", obj_description);
  m(g_root, "debugDescription", obj_description);
  m(g_root, "class", obj_class);
  m(g_root, "respondsToSelector:", obj_responds);
  m(g_root, "methodSignatureForSelector:", obj_method_signature);
  m(g_root, "isKindOfClass:", obj_is_kind);
  m(g_root, "copy", obj_copy);
  // Every Metal object has a label; Foundation objects do not, but MLX only
  // labels Metal objects, so one implementation on the root is enough.
  m(g_root, "label", obj_label);
  m(g_root, "setLabel:", obj_set_label);

  g_pool_cls = define("NSAutoreleasePool", "NSObject", make_of<Pool>, finalize_of<Pool>);
  m(g_pool_cls, "init", pool_init);
  m(g_pool_cls, "release", pool_release);
  m(g_pool_cls, "drain", pool_release);
  m(g_pool_cls, "retain", pool_retain);
  m(g_pool_cls, "autorelease", pool_autorelease);
  cm(g_pool_cls, "addObject:", pool_add_object);

  init_foundation();
  init_metal();
}

}  // namespace

}  // namespace metalsim

using namespace metalsim;

extern "C" {

// Called by the trampolines with the receiver and selector; returns the IMP.
__attribute__((visibility("default"))) void* metalsim_lookup(Obj* self, SEL s) {
  ensure_init();
  stats().messages++;
  SimClass* cls = load_isa(self);
  if (cls == g_zombie) {
    stats().zombie_messages++;
    if (config().zombie_abort) {
      fatal("-[%s %s]: message sent to deallocated instance %p", self->was ? self->was->name.c_str() : "?",
            (const char*)s, (void*)self);
    }
    warn("-[%s %s]: message sent to deallocated instance %p (ignored)",
         self->was ? self->was->name.c_str() : "?", (const char*)s, (void*)self);
    return reinterpret_cast<void*>(zero_imp);
  }
  {
    std::shared_lock lk(registry_mutex());
    if (!known_classes().count(cls)) {
      lk.unlock();
      fatal("message %s sent to %p, which is not a simulated object (isa %p)", (const char*)s, (void*)self,
            (void*)cls);
    }
    for (SimClass* c = cls; c; c = c->super) {
      auto it = c->methods.find(s);
      if (it != c->methods.end()) {
        if (config().trace) {
          fprintf(stderr, "metal-sim: trace %c[%s %s]\n", cls->meta ? '+' : '-',
                  cls->meta ? cls->instance_class->name.c_str() : cls->name.c_str(), (const char*)s);
        }
        return it->second;
      }
    }
  }
  const std::string& cname = cls->meta ? cls->instance_class->name : cls->name;
  if (config().unknown_abort) {
    fatal("unknown selector %c[%s %s]: not simulated (set MLX_SIM_UNKNOWN_SELECTOR=warn to return 0)",
          cls->meta ? '+' : '-', cname.c_str(), (const char*)s);
  }
  std::string key = cname + " " + (const char*)s;
  std::lock_guard lk(unknown_mutex());
  if (unknown_seen().insert(key).second) {
    stats().unknown_selectors++;
    warn("unknown selector %c[%s %s] returns 0 (the result is NOT simulated)", cls->meta ? '+' : '-',
         cname.c_str(), (const char*)s);
  }
  return reinterpret_cast<void*>(zero_imp);
}

__attribute__((visibility("default"))) Class objc_lookUpClass(const char* name) {
  ensure_init();
  static std::mutex define_mutex;
  std::lock_guard lk(define_mutex);
  SimClass* c = find_class(name);
  if (!c) {
    // A class metal-cpp names but the simulator does not implement: return a
    // placeholder so that the first message to it is reported with its name
    // (rather than a silent message to nil).
    c = define(name, "NSObject", nullptr, nullptr);
    c->make = nullptr;
  }
  return reinterpret_cast<Class>(c);
}

__attribute__((visibility("default"))) Class objc_getClass(const char* name) {
  return objc_lookUpClass(name);
}

__attribute__((visibility("default"))) Protocol* objc_getProtocol(const char* name) {
  ensure_init();
  return nullptr;
}

__attribute__((visibility("default"))) SEL sel_registerName(const char* name) {
  ensure_init();
  return sel(name);
}

__attribute__((visibility("default"))) SEL sel_getUid(const char* name) {
  return sel_registerName(name);
}

__attribute__((visibility("default"))) const char* sel_getName(SEL s) {
  return reinterpret_cast<const char*>(s);
}

__attribute__((visibility("default"))) const char* class_getName(Class c) {
  return c ? reinterpret_cast<SimClass*>(c)->name.c_str() : "nil";
}

__attribute__((visibility("default"))) Class object_getClass(id o) {
  return o ? reinterpret_cast<Class>(reinterpret_cast<Obj*>(o)->isa) : nullptr;
}

// MLX reads the machine's memory size and the GPU resource limit.
__attribute__((visibility("default"))) int sysctlbyname(const char* name, void* oldp, size_t* oldlenp,
                                                        void*, size_t) {
  ensure_init();
  if (!strcmp(name, "hw.memsize") && oldp && oldlenp && *oldlenp >= sizeof(uint64_t)) {
    uint64_t v = config().memory_size;
    memcpy(oldp, &v, sizeof v);
    *oldlenp = sizeof v;
    return 0;
  }
  errno = ENOENT;
  return -1;
}

// Clang lowers __builtin_available to this on Darwin targets; here it answers
// for the simulated macOS 15.4 (residency sets yes, Metal 4 no).
__attribute__((visibility("default"))) int32_t __isOSVersionAtLeast(int32_t major, int32_t minor, int32_t) {
  return major < 15 || (major == 15 && minor <= 4);
}
__attribute__((visibility("default"))) int32_t __isPlatformVersionAtLeast(uint32_t, uint32_t major, uint32_t minor,
                                                                          uint32_t) {
  return major < 15 || (major == 15 && minor <= 4);
}

void metalsim_get_stats(struct metalsim_stats* out) {
  ensure_init();
  auto& s = stats();
  out->messages = s.messages;
  out->committed = s.committed;
  out->completed = s.completed;
  out->failed = s.failed;
  out->invalid_resource = s.invalid_resource;
  out->injected_failures = s.injected_failures;
  out->dispatches = s.dispatches;
  out->buffers_live = s.buffers_live;
  out->buffer_bytes_live = s.buffer_bytes_live;
  out->objects_live = s.objects_live;
  out->zombie_messages = s.zombie_messages;
  out->unknown_selectors = s.unknown_selectors;
  out->handler_threads_seen = s.handler_threads_seen;
}

void metalsim_set_gpu_delay_us(uint32_t delay_us, uint32_t jitter_us) {
  ensure_init();
  config().gpu_delay_us = delay_us;
  config().gpu_jitter_us = jitter_us;
}

void metalsim_fail_next_commit(long code) {
  ensure_init();
  config().fail_next_code = code;
}

void metalsim_fail_commit_number(uint64_t n, long code) {
  ensure_init();
  config().fail_cb_number = n;
  config().fail_code = code;
}

void metalsim_set_late_handlers_us(uint32_t us) {
  ensure_init();
  config().late_handlers_us = us;
}

void metalsim_set_memory_size(uint64_t bytes) {
  ensure_init();
  config().memory_size = bytes;
}

void metalsim_set_alloc_limit(uint64_t bytes) {
  ensure_init();
  config().alloc_limit = bytes;
}

int metalsim_is_zombie(const void* obj) {
  ensure_init();
  return is_zombie(static_cast<const Obj*>(obj)) ? 1 : 0;
}

long metalsim_retain_count(const void* obj) {
  ensure_init();
  return obj ? static_cast<const Obj*>(obj)->rc.load() : 0;
}

void metalsim_set_zombie_abort(int abort_on_zombie) {
  ensure_init();
  config().zombie_abort = abort_on_zombie != 0;
}

Class metalsim_define_class(const char* name, const char* super_name) {
  ensure_init();
  return reinterpret_cast<Class>(define(name, super_name ? super_name : "NSObject", nullptr, nullptr));
}

void metalsim_add_method(Class cls, const char* selector, void* imp, int is_class_method) {
  ensure_init();
  auto* c = reinterpret_cast<SimClass*>(cls);
  if (is_class_method) {
    class_method(c, selector, imp);
  } else {
    method(c, selector, imp);
  }
}

}  // extern "C"
