// metal-sim: the Metal classes MLX's host code uses, with our reading of
// their lifetime and ordering semantics (SEMANTICS.md next to this file).
//
// Kernels are not executed. What is simulated is everything around them: a
// per-queue "GPU" thread that runs committed command buffers in order after a
// configurable delay, resource lifetime (retained vs unretained references,
// Invalid Resource when a released buffer is still referenced), shared
// events, completion handlers on the GPU thread, error statuses and the
// NS::Error** out-parameters of the creation methods.

#include "sim.hpp"

#include <Block.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>
#include <vector>

namespace metalsim {

namespace {

// MTLCommandBufferStatus
enum : long { kNotEnqueued = 0, kEnqueued = 1, kCommitted = 2, kScheduled = 3, kCompleted = 4, kError = 5 };

struct MTLSize {
  unsigned long width, height, depth;
};
struct NSRange {
  unsigned long location, length;
};

SimClass *g_device, *g_arch, *g_queue, *g_cb, *g_encoder, *g_buffer, *g_heap, *g_fence, *g_event, *g_library,
    *g_function, *g_pipeline, *g_rset, *g_heap_desc, *g_rset_desc, *g_compile_opts, *g_fc_values, *g_func_desc,
    *g_linked, *g_pipe_desc;

bool is_a(const Obj* o, const SimClass* cls) {
  if (!o || is_zombie(o)) {
    return false;
  }
  for (SimClass* c = load_isa(o); c; c = c->super) {
    if (c == cls) {
      return true;
    }
  }
  return false;
}

template <typename T>
T* expect(Obj* o, SimClass* cls, const char* where) {
  if (!o) {
    return nullptr;
  }
  zombie_check_arg(o, where);
  if (!is_a(o, cls)) {
    fatal("%s: expected a %s, got a %s", where, cls->name.c_str(), o->isa->name.c_str());
  }
  return static_cast<T*>(o);
}

void set_error_out(Obj** error, Obj* err) {
  // Cocoa returns errors autoreleased through the out-parameter, and sets it
  // to nil on success: MLX reads `error` even when the call succeeded and
  // sometimes never initializes it (device.cpp load_library_from_path).
  if (error) {
    *error = err ? autorelease(err) : nullptr;
  } else if (err) {
    release(err);
  }
}

// --- objects ---------------------------------------------------------------

struct Device : Obj {
  Obj* name{nullptr};
  Obj* arch{nullptr};
};
struct Arch : Obj {
  Obj* name{nullptr};
};

struct Heap;
struct Buffer : Obj {
  char* contents{nullptr};
  size_t length{0};
  size_t allocated{0};
  Heap* heap{nullptr};
  bool owns{true};
  void* deallocator{nullptr};  // block (void*, NSUInteger)
  unsigned long options{0};
  ~Buffer();
};

struct Heap : Obj {
  size_t size{0};
  std::atomic<size_t> used{0};
  unsigned long options{0};
};

Buffer::~Buffer() {
  stats().buffers_live--;
  stats().buffer_bytes_live -= allocated;
  if (deallocator) {
    reinterpret_cast<void (^)(void*, unsigned long)>(deallocator)(contents, length);
    Block_release(deallocator);
  } else if (owns) {
    free(contents);
  }
  contents = nullptr;
  if (heap) {
    heap->used -= allocated;
    release(heap);
  }
}

struct Fence : Obj {
  std::atomic<void*> updated_by{nullptr};  // QueueCore that last encoded updateFence
};

struct SharedEvent : Obj {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t value{0};
};

struct Library : Obj {
  std::string origin;
};
struct Function : Obj {
  std::string name;
};
struct Pipeline : Obj {
  std::string function;
};

struct ResidencySet : Obj {
  std::mutex mu;
  std::vector<Obj*> allocations;  // not retained (see SEMANTICS.md)
};

struct HeapDesc : Obj {
  size_t size{0};
  unsigned long options{0};
};
struct Plain : Obj {};
struct CompileOptions : Obj {
  long language_version{0};
};
struct FuncDesc : Obj {
  Obj* name{nullptr};
  Obj* specialized{nullptr};
  ~FuncDesc() {
    release(name);
    release(specialized);
  }
};

struct CommandBuffer;

struct QueueCore {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<CommandBuffer*> pending;
  bool started{false};
};
__thread QueueCore* t_gpu_core = nullptr;  // set on a queue's GPU thread

struct Queue : Obj {
  QueueCore* core{new QueueCore};  // never freed: its GPU thread outlives the queue
};

struct Command {
  enum Kind { kEncoder, kSignal, kWait } kind;
  SharedEvent* event{nullptr};
  uint64_t value{0};
  std::vector<Obj*> refs;  // kEncoder: buffers/heaps bound by this encoder, in order
  std::unordered_set<Obj*> ref_set;
};

struct CommandBuffer : Obj {
  Queue* queue{nullptr};
  bool retained_refs{true};
  std::atomic<long> status{kNotEnqueued};
  std::mutex mu;
  std::condition_variable cv;
  bool finished{false};  // waitUntilCompleted may return
  std::vector<void*> completed_handlers;
  std::vector<void*> scheduled_handlers;
  std::vector<Command> cmds;
  std::vector<Obj*> retained;  // retained-reference mode: everything bound, released after completion
  Obj* active_encoder{nullptr};
  Obj* error{nullptr};
  uint64_t serial{0};
  long inject{0};
  double gpu_start{0}, gpu_end{0};
  ~CommandBuffer() {
    release(error);
    release(queue);
  }
};

struct Encoder : Obj {
  CommandBuffer* cb{nullptr};
  bool ended{false};
  unsigned long dispatch_type{0};
  ~Encoder() {
    if (!ended) {
      fatal("compute command encoder deallocated without endEncoding (Metal asserts: "
            "'Command encoder released without endEncoding')");
    }
    release(cb);
  }
};

std::atomic<uint64_t> g_serial{0};
std::mutex g_handler_threads_mu;
std::unordered_set<std::thread::id>* g_handler_threads = new std::unordered_set<std::thread::id>;

Device* g_the_device = nullptr;
std::once_flag g_device_once;

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

uint64_t recommended_working_set() {
  return config().memory_size / 4 * 3;
}

const char* error_text(long code) {
  switch (code) {
    case METALSIM_ERROR_INTERNAL:
      return "Internal Error (00000001:kIOGPUCommandBufferCallbackErrorInternal)";
    case METALSIM_ERROR_TIMEOUT:
      return "Caused GPU Timeout Error (00000002:kIOGPUCommandBufferCallbackErrorTimeout)";
    case METALSIM_ERROR_PAGE_FAULT:
      return "Caused GPU Address Fault Error (0000000b:kIOGPUCommandBufferCallbackErrorPageFault)";
    case METALSIM_ERROR_OUT_OF_MEMORY:
      return "Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)";
    case METALSIM_ERROR_INVALID_RESOURCE:
      return "Invalid Resource (00000009:kIOGPUCommandBufferCallbackErrorInvalidResource)";
    default:
      return "Command buffer execution failed (metal-sim injected error)";
  }
}

// --- the GPU ----------------------------------------------------------------

void run_handlers(CommandBuffer* cb, std::vector<void*>& handlers) {
  {
    std::lock_guard lk(g_handler_threads_mu);
    if (g_handler_threads->insert(std::this_thread::get_id()).second) {
      stats().handler_threads_seen++;
    }
  }
  // No simulator lock is held here: handlers call back into MLX, which may
  // encode and commit other command buffers. An exception escaping a handler
  // ends the process through std::terminate, as on a GCD thread.
  for (void* h : handlers) {
    reinterpret_cast<void (^)(Obj*)>(h)(cb);
    Block_release(h);
  }
  handlers.clear();
}

void execute(CommandBuffer* cb) {
  cb->status = kScheduled;
  {
    std::lock_guard lk(cb->mu);
    cb->cv.notify_all();
  }
  run_handlers(cb, cb->scheduled_handlers);
  cb->gpu_start = now_seconds();

  auto& cfg = config();
  long code = cb->inject;
  bool delayed = false;
  auto delay = [&] {
    if (delayed) {
      return;
    }
    delayed = true;
    uint32_t us = cfg.gpu_delay_us;
    if (cfg.gpu_jitter_us) {
      thread_local std::minstd_rand rng(std::hash<std::thread::id>()(std::this_thread::get_id()));
      us += rng() % (cfg.gpu_jitter_us + 1);
    }
    if (us) {
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    }
  };

  for (auto& cmd : cb->cmds) {
    switch (cmd.kind) {
      case Command::kWait: {
        std::unique_lock lk(cmd.event->mu);
        bool ok = cmd.event->cv.wait_for(lk, std::chrono::milliseconds(cfg.gpu_timeout_ms),
                                         [&] { return cmd.event->value >= cmd.value; });
        if (!ok && code == 0) {
          warn("command buffer #%lu waited %u ms for shared event %p to reach %lu (at %lu): GPU timeout",
               (unsigned long)cb->serial, cfg.gpu_timeout_ms, (void*)cmd.event, (unsigned long)cmd.value,
               (unsigned long)cmd.event->value);
          code = METALSIM_ERROR_TIMEOUT;
        }
        break;
      }
      case Command::kSignal: {
        // Our reading: a failed command buffer still signals the events
        // encoded in it (work is skipped, the signal is not).
        std::lock_guard lk(cmd.event->mu);
        if (cmd.value > cmd.event->value) {
          cmd.event->value = cmd.value;
        }
        cmd.event->cv.notify_all();
        break;
      }
      case Command::kEncoder: {
        delay();
        if (code != 0) {
          break;  // a failed command buffer skips its remaining work
        }
        for (Obj* r : cmd.refs) {
          if (is_zombie(r)) {
            // The GPU touches a resource whose memory was returned: what
            // Metal reports as Invalid Resource for an unretained buffer.
            warn("command buffer #%lu (%s references) uses %s %p, released before the GPU ran it: "
                 "Invalid Resource",
                 (unsigned long)cb->serial, cb->retained_refs ? "retained" : "unretained",
                 r->was ? r->was->name.c_str() : "object", (void*)r);
            code = METALSIM_ERROR_INVALID_RESOURCE;
            break;
          }
        }
        break;
      }
    }
  }
  delay();
  cb->gpu_end = now_seconds();

  if (code != 0) {
    cb->error = new_error("MTLCommandBufferErrorDomain", code, error_text(code));
    stats().failed++;
    if (code == METALSIM_ERROR_INVALID_RESOURCE && cb->inject == 0) {
      stats().invalid_resource++;
    }
    if (cb->inject != 0) {
      stats().injected_failures++;
    }
    cb->status = kError;
  } else {
    stats().completed++;
    cb->status = kCompleted;
  }

  auto wake = [&] {
    std::lock_guard lk(cb->mu);
    cb->finished = true;
    cb->cv.notify_all();
  };
  if (cfg.late_handlers_us) {
    wake();
    std::this_thread::sleep_for(std::chrono::microseconds(cfg.late_handlers_us));
    run_handlers(cb, cb->completed_handlers);
  } else {
    run_handlers(cb, cb->completed_handlers);
    wake();
  }

  std::vector<Obj*> retained;
  {
    std::lock_guard lk(cb->mu);
    retained.swap(cb->retained);
  }
  for (Obj* r : retained) {
    release(r);
  }
  for (auto& cmd : cb->cmds) {
    if (cmd.event) {
      release(cmd.event);
    }
  }
  cb->cmds.clear();
  release(cb);  // the queue's reference, taken at commit
}

void gpu_loop(QueueCore* core) {
  t_gpu_core = core;
  for (;;) {
    CommandBuffer* cb;
    {
      std::unique_lock lk(core->mu);
      core->cv.wait(lk, [&] { return !core->pending.empty(); });
      cb = core->pending.front();
      core->pending.pop_front();
    }
    execute(cb);
  }
}

// --- device -----------------------------------------------------------------

Device* the_device() {
  std::call_once(g_device_once, [] {
    auto* d = static_cast<Device*>(alloc_instance(g_device));
    d->rc = 1L << 40;  // the system device is never deallocated
    d->name = new_string("Apple M2 Max (metal-sim)");
    auto* a = static_cast<Arch*>(alloc_instance(g_arch));
    a->name = new_string("applegpu_g14s");
    d->arch = a;
    g_the_device = d;
  });
  return g_the_device;
}

Obj* dev_name(Device* self, SEL) {
  return self->name;
}
Obj* dev_arch(Device* self, SEL) {
  return self->arch;
}
Obj* arch_name(Arch* self, SEL) {
  return self->name;
}
unsigned long dev_max_buffer_length(Device*, SEL) {
  return recommended_working_set();
}
unsigned long dev_recommended(Device*, SEL) {
  return recommended_working_set();
}
unsigned long dev_current_allocated(Device*, SEL) {
  return stats().buffer_bytes_live;
}
bool dev_true(Device*, SEL) {
  return true;
}
unsigned long dev_registry_id(Device*, SEL) {
  return 0x1000005a5;
}
unsigned long dev_max_tg_memory(Device*, SEL) {
  return 32768;
}
bool dev_supports_family(Device*, SEL, long family) {
  // Apple1-9, Common1-3, Mac2, Metal3: an M2-class GPU.
  return (family >= 1001 && family <= 1009) || (family >= 3001 && family <= 3003) || family == 2002 ||
         family == 5001;
}
MTLSize dev_max_threads(Device*, SEL) {
  return MTLSize{1024, 1024, 1024};
}

Obj* dev_new_queue(Device*, SEL) {
  return alloc_instance(g_queue);
}
Obj* dev_new_queue_max(Device* d, SEL s, unsigned long) {
  return dev_new_queue(d, s);
}
Obj* dev_new_fence(Device*, SEL) {
  return alloc_instance(g_fence);
}
Obj* dev_new_event(Device*, SEL) {
  return alloc_instance(g_event);
}

Buffer* new_buffer(size_t length, unsigned long options) {
  auto& cfg = config();
  size_t alloc = (length + 63) & ~size_t(63);
  if (cfg.alloc_limit && stats().buffer_bytes_live + alloc > cfg.alloc_limit) {
    return nullptr;  // like a failed allocation: newBuffer returns nil
  }
  void* p = aligned_alloc(64, alloc ? alloc : 64);
  if (!p) {
    return nullptr;
  }
  memset(p, 0, alloc);  // fresh Metal buffers are zero-filled pages
  auto* b = static_cast<Buffer*>(alloc_instance(g_buffer));
  b->contents = static_cast<char*>(p);
  b->length = length;
  b->allocated = alloc;
  b->options = options;
  stats().buffers_live++;
  stats().buffer_bytes_live += alloc;
  return b;
}

Obj* dev_new_buffer(Device*, SEL, unsigned long length, unsigned long options) {
  return new_buffer(length, options);
}
Obj* dev_new_buffer_bytes(Device*, SEL, const void* bytes, unsigned long length, unsigned long options) {
  Buffer* b = new_buffer(length, options);
  if (b && bytes) {
    memcpy(b->contents, bytes, length);
  }
  return b;
}
Obj* dev_new_buffer_nocopy(Device*, SEL, void* ptr, unsigned long length, unsigned long options, void* dealloc) {
  auto* b = static_cast<Buffer*>(alloc_instance(g_buffer));
  b->contents = static_cast<char*>(ptr);
  b->length = length;
  b->allocated = length;
  b->owns = false;
  b->options = options;
  b->deallocator = dealloc ? Block_copy(dealloc) : nullptr;
  stats().buffers_live++;
  stats().buffer_bytes_live += length;
  return b;
}

Obj* dev_new_heap(Device*, SEL, Obj* desc) {
  auto* d = expect<HeapDesc>(desc, g_heap_desc, "-[MTLDevice newHeapWithDescriptor:]");
  if (!d) {
    return nullptr;
  }
  auto* h = static_cast<Heap*>(alloc_instance(g_heap));
  h->size = d->size;
  h->options = d->options;
  return h;
}

Obj* dev_new_rset(Device*, SEL, Obj* desc, Obj** error) {
  expect<Obj>(desc, g_rset_desc, "-[MTLDevice newResidencySetWithDescriptor:error:]");
  set_error_out(error, nullptr);
  return alloc_instance(g_rset);
}

Obj* load_library_file(const std::string& path, Obj** error) {
  // A library "loads" when the file exists and starts like a metallib
  // ("MTLB"); simulate.py writes such a placeholder next to libmlx.
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {0, 0, 0, 0};
  if (f) {
    f.read(magic, 4);
  }
  if (!f || memcmp(magic, "MTLB", 4) != 0) {
    // MTLLibraryErrorFileNotFound = 6
    set_error_out(error, new_error("MTLLibraryErrorDomain", 6,
                                   (f ? "Invalid library file: " : "Library file not found: ") + path));
    return nullptr;
  }
  set_error_out(error, nullptr);
  auto* l = static_cast<Library*>(alloc_instance(g_library));
  l->origin = path;
  return l;
}

Obj* dev_new_library_file(Device*, SEL, Obj* path, Obj** error) {
  if (!path) {
    set_error_out(error, new_error("MTLLibraryErrorDomain", 6, "Library file not found: (nil)"));
    return nullptr;
  }
  return load_library_file(string_utf8(path), error);
}
Obj* dev_new_library_url(Device*, SEL, Obj* url, Obj** error) {
  return load_library_file(url_file_path(url), error);
}
Obj* dev_new_library_source(Device*, SEL, Obj*, Obj*, Obj** error) {
  // JIT sources "compile": kernels are not executed, so the text is not checked.
  set_error_out(error, nullptr);
  auto* l = static_cast<Library*>(alloc_instance(g_library));
  l->origin = "<source>";
  return l;
}

Obj* new_pipeline(Obj* function, Obj** error, const char* where) {
  auto* f = expect<Function>(function, g_function, where);
  if (!f) {
    // MTLLibraryErrorCompileFailure-like: no function to build from
    set_error_out(error, new_error("CompilerError", 3, "Function is nil"));
    return nullptr;
  }
  set_error_out(error, nullptr);
  auto* p = static_cast<Pipeline*>(alloc_instance(g_pipeline));
  p->function = f->name;
  return p;
}
Obj* dev_new_pipeline_fn(Device*, SEL, Obj* function, Obj** error) {
  return new_pipeline(function, error, "-[MTLDevice newComputePipelineStateWithFunction:error:]");
}
struct PipeDesc : Obj {
  Obj* function{nullptr};
  ~PipeDesc() {
    release(function);
  }
};
Obj* dev_new_pipeline_desc(Device*, SEL, Obj* desc, unsigned long, void* reflection, Obj** error) {
  auto* d = expect<PipeDesc>(desc, g_pipe_desc,
                             "-[MTLDevice newComputePipelineStateWithDescriptor:options:reflection:error:]");
  if (reflection) {
    *static_cast<Obj**>(reflection) = nullptr;
  }
  return new_pipeline(d ? d->function : nullptr, error,
                      "-[MTLDevice newComputePipelineStateWithDescriptor:options:reflection:error:]");
}

// --- library / function / pipeline -----------------------------------------

Obj* lib_new_function(Library*, SEL, Obj* name) {
  // Every kernel name exists: the simulator has no kernel list to check.
  auto* f = static_cast<Function*>(alloc_instance(g_function));
  f->name = name ? string_utf8(name) : "";
  return f;
}
Obj* lib_new_function_desc(Library* l, SEL s, Obj* desc, Obj** error) {
  auto* d = expect<FuncDesc>(desc, g_func_desc, "-[MTLLibrary newFunctionWithDescriptor:error:]");
  set_error_out(error, nullptr);
  Obj* name = d ? (d->specialized ? d->specialized : d->name) : nullptr;
  return lib_new_function(l, s, name);
}
Obj* lib_new_function_consts(Library* l, SEL s, Obj* name, Obj*, Obj** error) {
  set_error_out(error, nullptr);
  return lib_new_function(l, s, name);
}
Obj* fn_name(Function* f, SEL) {
  return make_string(f->name);
}
unsigned long pipe_max_threads(Pipeline*, SEL) {
  return 1024;
}
unsigned long pipe_exec_width(Pipeline*, SEL) {
  return 32;
}
unsigned long pipe_zero(Pipeline*, SEL) {
  return 0;
}

// --- descriptors --------------------------------------------------------------

void hd_set_size(HeapDesc* d, SEL, unsigned long v) {
  d->size = v;
}
unsigned long hd_size(HeapDesc* d, SEL) {
  return d->size;
}
void hd_set_options(HeapDesc* d, SEL, unsigned long v) {
  d->options = v;
}
void ignore_ulong(Obj*, SEL, unsigned long) {}
void ignore_bool(Obj*, SEL, bool) {}
void ignore_obj(Obj* self, SEL, Obj* o) {
  zombie_check_arg(o, "setter");
}
void co_set_lang(CompileOptions* o, SEL, long v) {
  o->language_version = v;
}
long co_lang(CompileOptions* o, SEL) {
  return o->language_version;
}
void fcv_set_const(Obj*, SEL, const void*, unsigned long, unsigned long) {}
void fcv_set_const_name(Obj*, SEL, const void*, unsigned long, Obj*) {}
Obj* fd_make(SimClass*, SEL) {
  return autorelease(alloc_instance(g_func_desc));
}
void fd_set_name(FuncDesc* d, SEL, Obj* n) {
  Obj* old = d->name;
  d->name = n ? retain(n) : nullptr;
  release(old);
}
void fd_set_specialized(FuncDesc* d, SEL, Obj* n) {
  Obj* old = d->specialized;
  d->specialized = n ? retain(n) : nullptr;
  release(old);
}
Obj* fd_name(FuncDesc* d, SEL) {
  return d->name;
}
Obj* lf_make(SimClass*, SEL) {
  return autorelease(alloc_instance(g_linked));
}
void pd_set_function(PipeDesc* d, SEL, Obj* f) {
  Obj* old = d->function;
  d->function = f ? retain(f) : nullptr;
  release(old);
}

// --- heap / buffer --------------------------------------------------------------

Obj* heap_new_buffer(Heap* h, SEL, unsigned long length, unsigned long options) {
  // Heap placement: sizes round up to 256 bytes, as MLX assumes.
  size_t need = (length + 255) & ~size_t(255);
  size_t used = h->used.load();
  do {
    if (used + need > h->size) {
      return nullptr;  // heap full: MLX falls back to the device
    }
  } while (!h->used.compare_exchange_weak(used, used + need));
  Buffer* b = new_buffer(length, options);
  if (!b) {
    h->used -= need;
    return nullptr;
  }
  stats().buffer_bytes_live -= b->allocated;
  b->allocated = need;
  stats().buffer_bytes_live += need;
  b->heap = static_cast<Heap*>(retain(h));
  return b;
}
unsigned long heap_size(Heap* h, SEL) {
  return h->size;
}
unsigned long heap_used(Heap* h, SEL) {
  return h->used;
}
unsigned long heap_available(Heap* h, SEL, unsigned long) {
  return h->size - h->used;
}
unsigned long set_purgeable(Obj*, SEL, unsigned long) {
  return 2;  // MTLPurgeableStateNonVolatile
}

void* buf_contents(Buffer* b, SEL) {
  return b->contents;
}
unsigned long buf_length(Buffer* b, SEL) {
  return b->length;
}
Obj* buf_heap(Buffer* b, SEL) {
  return b->heap;
}
unsigned long buf_allocated(Buffer* b, SEL) {
  return b->allocated;
}
unsigned long buf_gpu_address(Buffer* b, SEL) {
  return reinterpret_cast<uintptr_t>(b->contents);
}
void buf_did_modify(Buffer*, SEL, NSRange) {}
unsigned long buf_options(Buffer* b, SEL) {
  return b->options;
}
unsigned long buf_storage_mode(Buffer* b, SEL) {
  return (b->options >> 4) & 0xf;
}
unsigned long buf_zero(Buffer*, SEL) {
  return 0;
}

size_t allocation_size(Obj* o) {
  if (is_a(o, g_buffer)) {
    return static_cast<Buffer*>(o)->allocated;
  }
  if (is_a(o, g_heap)) {
    return static_cast<Heap*>(o)->size;
  }
  return 0;
}

// --- residency set --------------------------------------------------------------

void rs_add(ResidencySet* r, SEL, Obj* a) {
  zombie_check_arg(a, "-[MTLResidencySet addAllocation:]");
  std::lock_guard lk(r->mu);
  for (Obj* x : r->allocations) {
    if (x == a) {
      return;
    }
  }
  r->allocations.push_back(a);
}
void rs_remove(ResidencySet* r, SEL, Obj* a) {
  zombie_check_arg(a, "-[MTLResidencySet removeAllocation:]");
  std::lock_guard lk(r->mu);
  for (auto it = r->allocations.begin(); it != r->allocations.end(); ++it) {
    if (*it == a) {
      r->allocations.erase(it);
      return;
    }
  }
}
void rs_add_n(ResidencySet* r, SEL s, Obj* const* a, unsigned long n) {
  for (unsigned long i = 0; i < n; i++) {
    rs_add(r, s, a[i]);
  }
}
void rs_remove_n(ResidencySet* r, SEL s, Obj* const* a, unsigned long n) {
  for (unsigned long i = 0; i < n; i++) {
    rs_remove(r, s, a[i]);
  }
}
void rs_remove_all(ResidencySet* r, SEL) {
  std::lock_guard lk(r->mu);
  r->allocations.clear();
}
void rs_commit(ResidencySet* r, SEL) {
  std::lock_guard lk(r->mu);
  for (Obj* a : r->allocations) {
    if (is_zombie(a)) {
      fatal("-[MTLResidencySet commit]: the set holds a deallocated %s (%p)", a->was->name.c_str(), (void*)a);
    }
  }
}
void rs_noop(ResidencySet*, SEL) {}
unsigned long rs_allocated(ResidencySet* r, SEL) {
  std::lock_guard lk(r->mu);
  size_t total = 0;
  for (Obj* a : r->allocations) {
    total += allocation_size(a);
  }
  return total;
}
unsigned long rs_count(ResidencySet* r, SEL) {
  std::lock_guard lk(r->mu);
  return r->allocations.size();
}
Obj* rs_all(ResidencySet* r, SEL) {
  std::lock_guard lk(r->mu);
  return autorelease(new_array(r->allocations.data(), r->allocations.size()));
}
bool rs_contains(ResidencySet* r, SEL, Obj* a) {
  std::lock_guard lk(r->mu);
  for (Obj* x : r->allocations) {
    if (x == a) {
      return true;
    }
  }
  return false;
}

// --- shared event -------------------------------------------------------------------

uint64_t ev_value(SharedEvent* e, SEL) {
  std::lock_guard lk(e->mu);
  return e->value;
}
void ev_set_value(SharedEvent* e, SEL, uint64_t v) {
  std::lock_guard lk(e->mu);
  e->value = v;
  e->cv.notify_all();
}
bool ev_wait(SharedEvent* e, SEL, uint64_t v, uint64_t timeout_ms) {
  std::unique_lock lk(e->mu);
  auto ready = [&] { return e->value >= v; };
  if (timeout_ms == UINT64_MAX) {  // wait forever
    e->cv.wait(lk, ready);
    return true;
  }
  return e->cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), ready);
}
Obj* any_device(Obj*, SEL) {
  return the_device();
}

// --- queue ------------------------------------------------------------------------

Obj* new_command_buffer(Queue* q, bool retained) {
  auto* cb = static_cast<CommandBuffer*>(alloc_instance(g_cb));
  cb->queue = static_cast<Queue*>(retain(q));
  cb->retained_refs = retained;
  return autorelease(cb);
}
Obj* q_cb(Queue* q, SEL) {
  return new_command_buffer(q, true);
}
Obj* q_cb_unretained(Queue* q, SEL) {
  return new_command_buffer(q, false);
}
void q_add_rset(Queue*, SEL, Obj* r) {
  expect<Obj>(r, g_rset, "-[MTLCommandQueue addResidencySet:]");
}
void q_add_rsets(Queue* q, SEL s, Obj* const* r, unsigned long n) {
  for (unsigned long i = 0; i < n; i++) {
    q_add_rset(q, s, r[i]);
  }
}

// --- command buffer ------------------------------------------------------------------

const char* cb_state_name(long s) {
  static const char* names[] = {"NotEnqueued", "Enqueued", "Committed", "Scheduled", "Completed", "Error"};
  return (s >= 0 && s <= 5) ? names[s] : "?";
}

void cb_require_open(CommandBuffer* cb, const char* what) {
  if (cb->status >= kCommitted) {
    fatal("-[MTLCommandBuffer %s]: called after commit (status %s) - Metal raises an exception here", what,
          cb_state_name(cb->status));
  }
}

void cb_add_completed(CommandBuffer* cb, SEL, void* block) {
  std::lock_guard lk(cb->mu);
  if (cb->status >= kCommitted) {
    fatal("-[MTLCommandBuffer addCompletedHandler:]: Completed handler provided after commit call");
  }
  cb->completed_handlers.push_back(Block_copy(block));
}
void cb_add_scheduled(CommandBuffer* cb, SEL, void* block) {
  std::lock_guard lk(cb->mu);
  if (cb->status >= kCommitted) {
    fatal("-[MTLCommandBuffer addScheduledHandler:]: Scheduled handler provided after commit call");
  }
  cb->scheduled_handlers.push_back(Block_copy(block));
}

Obj* cb_encoder(CommandBuffer* cb, SEL, unsigned long dispatch_type) {
  std::lock_guard lk(cb->mu);
  cb_require_open(cb, "computeCommandEncoder");
  if (cb->active_encoder) {
    fatal("-[MTLCommandBuffer computeCommandEncoder]: A command encoder is already encoding to this "
          "command buffer");
  }
  auto* e = static_cast<Encoder*>(alloc_instance(g_encoder));
  e->cb = static_cast<CommandBuffer*>(retain(cb));
  e->dispatch_type = dispatch_type;
  cb->active_encoder = e;
  Command c{Command::kEncoder};
  cb->cmds.push_back(std::move(c));
  return autorelease(e);
}
Obj* cb_encoder_serial(CommandBuffer* cb, SEL s) {
  return cb_encoder(cb, s, 0);
}

void cb_encode_event(CommandBuffer* cb, Obj* event, uint64_t value, Command::Kind kind, const char* what) {
  auto* e = expect<SharedEvent>(event, g_event, what);
  std::lock_guard lk(cb->mu);
  cb_require_open(cb, what);
  if (cb->active_encoder) {
    fatal("-[MTLCommandBuffer %s]: called while a command encoder is active", what);
  }
  Command c{kind};
  c.event = static_cast<SharedEvent*>(retain(e));
  c.value = value;
  cb->cmds.push_back(std::move(c));
}
void cb_signal(CommandBuffer* cb, SEL, Obj* event, uint64_t value) {
  cb_encode_event(cb, event, value, Command::kSignal, "encodeSignalEvent:value:");
}
void cb_wait_event(CommandBuffer* cb, SEL, Obj* event, uint64_t value) {
  cb_encode_event(cb, event, value, Command::kWait, "encodeWaitForEvent:value:");
}

void cb_commit(CommandBuffer* cb, SEL) {
  QueueCore* core;
  {
    std::lock_guard lk(cb->mu);
    if (cb->status >= kCommitted) {
      fatal("-[MTLCommandBuffer commit]: commit an already committed command buffer");
    }
    if (cb->active_encoder) {
      fatal("-[MTLCommandBuffer commit]: commit command buffer with uncommitted encoder");
    }
    cb->serial = ++g_serial;
    auto& cfg = config();
    long next = cfg.fail_next_code.exchange(0);
    if (next) {
      cb->inject = next;
    } else if (cfg.fail_cb_number && cb->serial == cfg.fail_cb_number) {
      cb->inject = cfg.fail_code;
    }
    cb->status = kCommitted;
    stats().committed++;
    retain(cb);  // the queue keeps a committed command buffer alive until it completes
    core = cb->queue->core;
  }
  std::lock_guard lk(core->mu);
  core->pending.push_back(cb);
  if (!core->started) {
    core->started = true;
    std::thread(gpu_loop, core).detach();
  }
  core->cv.notify_one();
}
void cb_enqueue(CommandBuffer* cb, SEL) {
  std::lock_guard lk(cb->mu);
  if (cb->status == kNotEnqueued) {
    cb->status = kEnqueued;
  }
}

void cb_wait_completed(CommandBuffer* cb, SEL) {
  if (cb->status < kCommitted) {
    fatal("-[MTLCommandBuffer waitUntilCompleted] on a command buffer that was never committed: "
          "this blocks forever on Metal");
  }
  std::unique_lock lk(cb->mu);
  if (t_gpu_core && t_gpu_core == cb->queue->core && !cb->finished) {
    fatal("-[MTLCommandBuffer waitUntilCompleted] called from a handler on its own queue: deadlock");
  }
  cb->cv.wait(lk, [&] { return cb->finished; });
}
void cb_wait_scheduled(CommandBuffer* cb, SEL) {
  if (cb->status < kCommitted) {
    fatal("-[MTLCommandBuffer waitUntilScheduled] on a command buffer that was never committed");
  }
  std::unique_lock lk(cb->mu);
  cb->cv.wait(lk, [&] { return cb->status >= kScheduled; });
}
long cb_status(CommandBuffer* cb, SEL) {
  return cb->status;
}
Obj* cb_error(CommandBuffer* cb, SEL) {
  return cb->status == kError ? cb->error : nullptr;
}
bool cb_retained(CommandBuffer* cb, SEL) {
  return cb->retained_refs;
}
double cb_gpu_start(CommandBuffer* cb, SEL) {
  return cb->gpu_start;
}
double cb_gpu_end(CommandBuffer* cb, SEL) {
  return cb->gpu_end;
}
Obj* cb_queue(CommandBuffer* cb, SEL) {
  return cb->queue;
}

// --- compute encoder ------------------------------------------------------------------

CommandBuffer* enc_open(Encoder* e, const char* what) {
  if (e->ended) {
    fatal("-[MTLComputeCommandEncoder %s]: encoding after endEncoding", what);
  }
  return e->cb;
}

void enc_bind(Encoder* e, Obj* res, const char* what) {
  if (!res) {
    return;
  }
  zombie_check_arg(res, what);
  if (!is_a(res, g_buffer) && !is_a(res, g_heap)) {
    fatal("%s: expected an MTLBuffer or MTLHeap, got a %s", what, res->isa->name.c_str());
  }
  CommandBuffer* cb = enc_open(e, what);
  std::lock_guard lk(cb->mu);
  Command& c = cb->cmds.back();
  if (c.ref_set.insert(res).second) {
    c.refs.push_back(res);
    if (cb->retained_refs) {
      cb->retained.push_back(retain(res));
    }
  }
}

void enc_set_pipeline(Encoder* e, SEL, Obj* p) {
  enc_open(e, "setComputePipelineState:");
  expect<Pipeline>(p, g_pipeline, "-[MTLComputeCommandEncoder setComputePipelineState:]");
}
void enc_set_buffer(Encoder* e, SEL, Obj* buf, unsigned long, unsigned long) {
  enc_bind(e, buf, "-[MTLComputeCommandEncoder setBuffer:offset:atIndex:]");
}
void enc_set_buffers(Encoder* e, SEL, Obj* const* bufs, const unsigned long*, NSRange range) {
  for (unsigned long i = 0; i < range.length; i++) {
    enc_bind(e, bufs[i], "-[MTLComputeCommandEncoder setBuffers:offsets:withRange:]");
  }
}
void enc_set_bytes(Encoder* e, SEL, const void*, unsigned long len, unsigned long) {
  enc_open(e, "setBytes:length:atIndex:");
  if (len > 4096) {
    fatal("-[MTLComputeCommandEncoder setBytes:length:atIndex:]: %lu bytes exceeds the 4 KiB limit", len);
  }
}
void enc_set_tg_mem(Encoder* e, SEL, unsigned long, unsigned long) {
  enc_open(e, "setThreadgroupMemoryLength:atIndex:");
}
void enc_dispatch(Encoder* e, SEL, MTLSize grid, MTLSize group) {
  enc_open(e, "dispatch");
  if (group.width * group.height * group.depth == 0 || grid.width * grid.height * grid.depth == 0) {
    // Metal's validation layer rejects empty dispatches; without it they are no-ops.
  }
  stats().dispatches++;
}
void enc_barrier(Encoder* e, SEL, unsigned long) {
  enc_open(e, "memoryBarrierWithScope:");
}
void enc_barrier_res(Encoder* e, SEL, Obj* const* res, unsigned long n) {
  for (unsigned long i = 0; i < n; i++) {
    zombie_check_arg(res[i], "-[MTLComputeCommandEncoder memoryBarrierWithResources:count:]");
  }
  enc_open(e, "memoryBarrierWithResources:count:");
}
void enc_wait_fence(Encoder* e, SEL, Obj* f) {
  CommandBuffer* cb = enc_open(e, "waitForFence:");
  auto* fence = expect<Fence>(f, g_fence, "-[MTLComputeCommandEncoder waitForFence:]");
  void* by = fence ? fence->updated_by.load() : nullptr;
  if (by && by != cb->queue->core) {
    warn("waitForFence: on a fence last updated on another command queue (fences order work within one "
         "queue only)");
  }
}
void enc_update_fence(Encoder* e, SEL, Obj* f) {
  CommandBuffer* cb = enc_open(e, "updateFence:");
  auto* fence = expect<Fence>(f, g_fence, "-[MTLComputeCommandEncoder updateFence:]");
  if (fence) {
    fence->updated_by = cb->queue->core;
  }
}
void enc_use_resource(Encoder* e, SEL, Obj* r, unsigned long) {
  enc_bind(e, r, "-[MTLComputeCommandEncoder useResource:usage:]");
}
void enc_end(Encoder* e, SEL) {
  if (e->ended) {
    fatal("-[MTLComputeCommandEncoder endEncoding]: called twice");
  }
  CommandBuffer* cb = e->cb;
  std::lock_guard lk(cb->mu);
  e->ended = true;
  if (cb->active_encoder == e) {
    cb->active_encoder = nullptr;
  }
}
unsigned long enc_dispatch_type(Encoder* e, SEL) {
  return e->dispatch_type;
}
Obj* enc_cb(Encoder* e, SEL) {
  return e->cb;
}

}  // namespace

void init_metal() {
  g_device = define("MTLSimDevice", "NSObject", make_of<Device>, finalize_of<Device>);
  m(g_device, "name", dev_name);
  m(g_device, "architecture", dev_arch);
  m(g_device, "maxBufferLength", dev_max_buffer_length);
  m(g_device, "recommendedMaxWorkingSetSize", dev_recommended);
  m(g_device, "currentAllocatedSize", dev_current_allocated);
  m(g_device, "hasUnifiedMemory", dev_true);
  m(g_device, "registryID", dev_registry_id);
  m(g_device, "maxThreadgroupMemoryLength", dev_max_tg_memory);
  m(g_device, "supportsFamily:", dev_supports_family);
  m(g_device, "maxThreadsPerThreadgroup", dev_max_threads);
  m(g_device, "newCommandQueue", dev_new_queue);
  m(g_device, "newCommandQueueWithMaxCommandBufferCount:", dev_new_queue_max);
  m(g_device, "newFence", dev_new_fence);
  m(g_device, "newSharedEvent", dev_new_event);
  m(g_device, "newEvent", dev_new_event);
  m(g_device, "newBufferWithLength:options:", dev_new_buffer);
  m(g_device, "newBufferWithBytes:length:options:", dev_new_buffer_bytes);
  m(g_device, "newBufferWithBytesNoCopy:length:options:deallocator:", dev_new_buffer_nocopy);
  m(g_device, "newHeapWithDescriptor:", dev_new_heap);
  m(g_device, "newResidencySetWithDescriptor:error:", dev_new_rset);
  m(g_device, "newLibraryWithFile:error:", dev_new_library_file);
  m(g_device, "newLibraryWithURL:error:", dev_new_library_url);
  m(g_device, "newLibraryWithSource:options:error:", dev_new_library_source);
  m(g_device, "newComputePipelineStateWithFunction:error:", dev_new_pipeline_fn);
  m(g_device, "newComputePipelineStateWithDescriptor:options:reflection:error:", dev_new_pipeline_desc);

  g_arch = define("MTLSimArchitecture", "NSObject", make_of<Arch>, finalize_of<Arch>);
  m(g_arch, "name", arch_name);

  g_queue = define("MTLSimCommandQueue", "NSObject", make_of<Queue>, finalize_of<Queue>);
  m(g_queue, "commandBuffer", q_cb);
  m(g_queue, "commandBufferWithUnretainedReferences", q_cb_unretained);
  m(g_queue, "addResidencySet:", q_add_rset);
  m(g_queue, "removeResidencySet:", q_add_rset);
  m(g_queue, "addResidencySets:count:", q_add_rsets);
  m(g_queue, "removeResidencySets:count:", q_add_rsets);
  m(g_queue, "device", any_device);

  g_cb = define("MTLSimCommandBuffer", "NSObject", make_of<CommandBuffer>, finalize_of<CommandBuffer>);
  m(g_cb, "addCompletedHandler:", cb_add_completed);
  m(g_cb, "addScheduledHandler:", cb_add_scheduled);
  m(g_cb, "computeCommandEncoder", cb_encoder_serial);
  m(g_cb, "computeCommandEncoderWithDispatchType:", cb_encoder);
  m(g_cb, "encodeSignalEvent:value:", cb_signal);
  m(g_cb, "encodeWaitForEvent:value:", cb_wait_event);
  m(g_cb, "commit", cb_commit);
  m(g_cb, "enqueue", cb_enqueue);
  m(g_cb, "waitUntilCompleted", cb_wait_completed);
  m(g_cb, "waitUntilScheduled", cb_wait_scheduled);
  m(g_cb, "status", cb_status);
  m(g_cb, "error", cb_error);
  m(g_cb, "retainedReferences", cb_retained);
  m(g_cb, "GPUStartTime", cb_gpu_start);
  m(g_cb, "GPUEndTime", cb_gpu_end);
  m(g_cb, "commandQueue", cb_queue);
  m(g_cb, "device", any_device);

  g_encoder = define("MTLSimComputeCommandEncoder", "NSObject", make_of<Encoder>, finalize_of<Encoder>);
  m(g_encoder, "setComputePipelineState:", enc_set_pipeline);
  m(g_encoder, "setBuffer:offset:atIndex:", enc_set_buffer);
  m(g_encoder, "setBuffers:offsets:withRange:", enc_set_buffers);
  m(g_encoder, "setBytes:length:atIndex:", enc_set_bytes);
  m(g_encoder, "setThreadgroupMemoryLength:atIndex:", enc_set_tg_mem);
  m(g_encoder, "dispatchThreadgroups:threadsPerThreadgroup:", enc_dispatch);
  m(g_encoder, "dispatchThreads:threadsPerThreadgroup:", enc_dispatch);
  m(g_encoder, "memoryBarrierWithScope:", enc_barrier);
  m(g_encoder, "memoryBarrierWithResources:count:", enc_barrier_res);
  m(g_encoder, "waitForFence:", enc_wait_fence);
  m(g_encoder, "updateFence:", enc_update_fence);
  m(g_encoder, "useResource:usage:", enc_use_resource);
  m(g_encoder, "endEncoding", enc_end);
  m(g_encoder, "dispatchType", enc_dispatch_type);
  m(g_encoder, "commandBuffer", enc_cb);
  m(g_encoder, "device", any_device);

  g_buffer = define("MTLSimBuffer", "NSObject", make_of<Buffer>, finalize_of<Buffer>);
  m(g_buffer, "contents", buf_contents);
  m(g_buffer, "length", buf_length);
  m(g_buffer, "heap", buf_heap);
  m(g_buffer, "allocatedSize", buf_allocated);
  m(g_buffer, "gpuAddress", buf_gpu_address);
  m(g_buffer, "didModifyRange:", buf_did_modify);
  m(g_buffer, "resourceOptions", buf_options);
  m(g_buffer, "storageMode", buf_storage_mode);
  m(g_buffer, "heapOffset", buf_zero);
  m(g_buffer, "setPurgeableState:", set_purgeable);
  m(g_buffer, "device", any_device);

  g_heap = define("MTLSimHeap", "NSObject", make_of<Heap>, finalize_of<Heap>);
  m(g_heap, "newBufferWithLength:options:", heap_new_buffer);
  m(g_heap, "size", heap_size);
  m(g_heap, "usedSize", heap_used);
  m(g_heap, "currentAllocatedSize", heap_size);
  m(g_heap, "allocatedSize", heap_size);
  m(g_heap, "maxAvailableSizeWithAlignment:", heap_available);
  m(g_heap, "setPurgeableState:", set_purgeable);
  m(g_heap, "device", any_device);

  g_fence = define("MTLSimFence", "NSObject", make_of<Fence>, finalize_of<Fence>);
  m(g_fence, "device", any_device);

  g_event = define("MTLSimSharedEvent", "NSObject", make_of<SharedEvent>, finalize_of<SharedEvent>);
  m(g_event, "signaledValue", ev_value);
  m(g_event, "setSignaledValue:", ev_set_value);
  m(g_event, "waitUntilSignaledValue:timeoutMS:", ev_wait);
  m(g_event, "device", any_device);

  g_library = define("MTLSimLibrary", "NSObject", make_of<Library>, finalize_of<Library>);
  m(g_library, "newFunctionWithName:", lib_new_function);
  m(g_library, "newFunctionWithDescriptor:error:", lib_new_function_desc);
  m(g_library, "newFunctionWithName:constantValues:error:", lib_new_function_consts);
  m(g_library, "device", any_device);

  g_function = define("MTLSimFunction", "NSObject", make_of<Function>, finalize_of<Function>);
  m(g_function, "name", fn_name);
  m(g_function, "device", any_device);

  g_pipeline = define("MTLSimComputePipelineState", "NSObject", make_of<Pipeline>, finalize_of<Pipeline>);
  m(g_pipeline, "maxTotalThreadsPerThreadgroup", pipe_max_threads);
  m(g_pipeline, "threadExecutionWidth", pipe_exec_width);
  m(g_pipeline, "staticThreadgroupMemoryLength", pipe_zero);
  m(g_pipeline, "device", any_device);

  g_rset = define("MTLSimResidencySet", "NSObject", make_of<ResidencySet>, finalize_of<ResidencySet>);
  m(g_rset, "addAllocation:", rs_add);
  m(g_rset, "removeAllocation:", rs_remove);
  m(g_rset, "addAllocations:count:", rs_add_n);
  m(g_rset, "removeAllocations:count:", rs_remove_n);
  m(g_rset, "removeAllAllocations", rs_remove_all);
  m(g_rset, "commit", rs_commit);
  m(g_rset, "requestResidency", rs_noop);
  m(g_rset, "endResidency", rs_noop);
  m(g_rset, "allocatedSize", rs_allocated);
  m(g_rset, "allocationCount", rs_count);
  m(g_rset, "allAllocations", rs_all);
  m(g_rset, "containsAllocation:", rs_contains);
  m(g_rset, "device", any_device);

  // Descriptors: the public class names metal-cpp looks up, created with alloc/init.
  g_heap_desc = define("MTLHeapDescriptor", "NSObject", make_of<HeapDesc>, finalize_of<HeapDesc>);
  m(g_heap_desc, "setSize:", hd_set_size);
  m(g_heap_desc, "size", hd_size);
  m(g_heap_desc, "setResourceOptions:", hd_set_options);
  m(g_heap_desc, "setStorageMode:", ignore_ulong);
  m(g_heap_desc, "setCpuCacheMode:", ignore_ulong);
  m(g_heap_desc, "setHazardTrackingMode:", ignore_ulong);
  m(g_heap_desc, "setType:", ignore_ulong);

  g_rset_desc = define("MTLResidencySetDescriptor", "NSObject", make_of<Plain>, finalize_of<Plain>);
  m(g_rset_desc, "setInitialCapacity:", ignore_ulong);

  g_compile_opts = define("MTLCompileOptions", "NSObject", make_of<CompileOptions>, finalize_of<CompileOptions>);
  m(g_compile_opts, "setFastMathEnabled:", ignore_bool);
  m(g_compile_opts, "setMathMode:", ignore_ulong);
  m(g_compile_opts, "setMathFloatingPointFunctions:", ignore_ulong);
  m(g_compile_opts, "setLanguageVersion:", co_set_lang);
  m(g_compile_opts, "languageVersion", co_lang);
  m(g_compile_opts, "setEnableLogging:", ignore_bool);
  m(g_compile_opts, "setPreprocessorMacros:", ignore_obj);
  m(g_compile_opts, "setOptimizationLevel:", ignore_ulong);

  g_fc_values = define("MTLFunctionConstantValues", "NSObject", make_of<Plain>, finalize_of<Plain>);
  m(g_fc_values, "setConstantValue:type:atIndex:", fcv_set_const);
  m(g_fc_values, "setConstantValue:type:withName:", fcv_set_const_name);

  g_func_desc = define("MTLFunctionDescriptor", "NSObject", make_of<FuncDesc>, finalize_of<FuncDesc>);
  cm(g_func_desc, "functionDescriptor", fd_make);
  m(g_func_desc, "setName:", fd_set_name);
  m(g_func_desc, "setSpecializedName:", fd_set_specialized);
  m(g_func_desc, "name", fd_name);
  m(g_func_desc, "setConstantValues:", ignore_obj);
  m(g_func_desc, "setOptions:", ignore_ulong);

  g_linked = define("MTLLinkedFunctions", "NSObject", make_of<Plain>, finalize_of<Plain>);
  cm(g_linked, "linkedFunctions", lf_make);
  m(g_linked, "setPrivateFunctions:", ignore_obj);
  m(g_linked, "setFunctions:", ignore_obj);
  m(g_linked, "setBinaryFunctions:", ignore_obj);

  g_pipe_desc = define("MTLComputePipelineDescriptor", "NSObject", make_of<PipeDesc>, finalize_of<PipeDesc>);
  m(g_pipe_desc, "setComputeFunction:", pd_set_function);
  m(g_pipe_desc, "setLinkedFunctions:", ignore_obj);
  m(g_pipe_desc, "setMaxTotalThreadsPerThreadgroup:", ignore_ulong);
  m(g_pipe_desc, "setSupportIndirectCommandBuffers:", ignore_bool);
}

}  // namespace metalsim

using namespace metalsim;

extern "C" {

__attribute__((visibility("default"))) Obj* MTLCreateSystemDefaultDevice() {
  sel_registerName("init");  // make sure the runtime is initialized
  return retain(the_device());
}

__attribute__((visibility("default"))) Obj* MTLCopyAllDevices() {
  sel_registerName("init");
  Obj* d = the_device();
  return new_array(&d, 1);
}

// Device hot-plug notifications never fire in the simulator: the observer is
// nil and the handler is never called.
__attribute__((visibility("default"))) Obj* MTLCopyAllDevicesWithObserver(Obj** observer, void*) {
  if (observer) {
    *observer = nullptr;
  }
  return MTLCopyAllDevices();
}

__attribute__((visibility("default"))) void MTLRemoveDeviceObserver(const Obj*) {}

}  // extern "C"
