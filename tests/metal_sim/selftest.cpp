// Tests of the simulated Metal runtime itself (no MLX): each case is one
// process, selected by argv[1]; tests/test_metal_sim.py runs them and checks
// exit status and output. Messages are sent exactly as metal-cpp sends them:
// objc_msgSend cast to the precise function type at the call site.

#include <objc/message.h>
#include <objc/runtime.h>

#include <Block.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/sysctl.h>

#include "metal_sim.h"

extern "C" void* MTLCreateSystemDefaultDevice();

namespace {

template <typename R, typename... A>
R send(const void* obj, const char* selector, A... args) {
  using Fn = R (*)(const void*, SEL, A...);
  return reinterpret_cast<Fn>(&objc_msgSend)(obj, sel_registerName(selector), args...);
}
template <typename R, typename... A>
R send_fp(const void* obj, const char* selector, A... args) {
  using Fn = R (*)(const void*, SEL, A...);
  return reinterpret_cast<Fn>(&objc_msgSend_fpret)(obj, sel_registerName(selector), args...);
}
template <typename R, typename... A>
R send_st(const void* obj, const char* selector, A... args) {
  using Fn = void (*)(R*, const void*, SEL, A...);
  R r;
  memset(&r, 0xAB, sizeof r);
  reinterpret_cast<Fn>(&objc_msgSend_stret)(&r, obj, sel_registerName(selector), args...);
  return r;
}

struct Size {
  unsigned long w, h, d;
};

int failures = 0;
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "CHECK failed at line %d: %s\n", __LINE__, #cond);   \
      failures++;                                                          \
    }                                                                      \
  } while (0)

// --- implementations for the dispatch test ----------------------------------
long imp_sum8(id, SEL, long a, long b, long c, long d, long e, long f, long g, long h) {
  // a..d in registers, e..h partly on the stack (rdi/rsi are self/_cmd)
  return a + 10 * b + 100 * c + 1000 * d + 10000 * e + 100000 * f + 1000000 * g + 10000000 * h;
}
double imp_mix(id, SEL, double x, long n, float y, double z) {
  return x * n + y - z;
}
Size imp_size(id, SEL, unsigned long k) {
  return Size{k, k + 1, k + 2};
}
unsigned long imp_size_args(id, SEL, Size a, Size b) {
  return a.w + a.h + a.d + 10 * (b.w + b.h + b.d);
}
double imp_fp(id, SEL) {
  return 2.5;
}
long imp_class_answer(Class, SEL) {
  return 42;
}

id device() {
  static id d = reinterpret_cast<id>(MTLCreateSystemDefaultDevice());
  return d;
}

id new_pool() {
  return send<id>(send<id>(objc_lookUpClass("NSAutoreleasePool"), "alloc"), "init");
}

id make_string(const char* s) {
  return send<id>(objc_lookUpClass("NSString"), "stringWithCString:encoding:", s, 4UL);
}

// An unretained or retained command buffer that binds `buf` in one encoder.
id encode_using(id queue, id buf, bool retained) {
  id cb = send<id>(queue, retained ? "commandBuffer" : "commandBufferWithUnretainedReferences");
  send<id>(cb, "retain");
  id enc = send<id>(cb, "computeCommandEncoderWithDispatchType:", 1UL);
  send<void>(enc, "setBuffer:offset:atIndex:", buf, 0UL, 0UL);
  send<void>(enc, "dispatchThreads:threadsPerThreadgroup:", Size{64, 1, 1}, Size{32, 1, 1});
  send<void>(enc, "endEncoding");
  return cb;
}

int case_dispatch() {
  Class c = metalsim_define_class("TestDispatch", nullptr);
  metalsim_add_method(c, "sum:b:c:d:e:f:g:h:", reinterpret_cast<void*>(imp_sum8), 0);
  metalsim_add_method(c, "mix:n:y:z:", reinterpret_cast<void*>(imp_mix), 0);
  metalsim_add_method(c, "sizeFor:", reinterpret_cast<void*>(imp_size), 0);
  metalsim_add_method(c, "sumSizes:and:", reinterpret_cast<void*>(imp_size_args), 0);
  metalsim_add_method(c, "fp", reinterpret_cast<void*>(imp_fp), 0);
  metalsim_add_method(c, "answer", reinterpret_cast<void*>(imp_class_answer), 1);
  id pool = new_pool();
  id o = send<id>(send<id>(c, "alloc"), "init");
  CHECK(o != nullptr);
  CHECK(send<long>(o, "sum:b:c:d:e:f:g:h:", 1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L) == 87654321L);
  CHECK(send_fp<double>(o, "mix:n:y:z:", 1.5, 4L, 0.25f, 0.75) == 5.5);
  CHECK(send_fp<double>(o, "fp") == 2.5);
  Size s = send_st<Size>(o, "sizeFor:", 7UL);
  CHECK(s.w == 7 && s.h == 8 && s.d == 9);
  CHECK(send<unsigned long>(o, "sumSizes:and:", Size{1, 2, 3}, Size{4, 5, 6}) == 156);
  CHECK(send<long>(c, "answer") == 42);
  // Messages to nil return zero, as in Objective-C.
  CHECK(send<long>(nullptr, "anything") == 0);
  CHECK(send_fp<double>(nullptr, "anything") == 0.0);
  // A Metal struct return through _stret: MTLDevice maxThreadsPerThreadgroup.
  Size mt = send_st<Size>(device(), "maxThreadsPerThreadgroup");
  CHECK(mt.w == 1024 && mt.h == 1024 && mt.d == 1024);
  // A Foundation round trip.
  id str = make_string("hello metal");
  CHECK(strcmp(send<const char*>(str, "UTF8String"), "hello metal") == 0);
  CHECK(send<unsigned long>(str, "length") == 11);
  CHECK(send<bool>(o, "respondsToSelector:", sel_registerName("fp")));
  CHECK(!send<bool>(o, "respondsToSelector:", sel_registerName("nope")));
  send<void>(o, "release");
  send<void>(pool, "release");
  printf("dispatch ok\n");
  return failures ? 1 : 0;
}

int case_unknown_selector() {
  id pool = new_pool();
  send<long>(device(), "thisSelectorDoesNotExist");
  send<void>(pool, "release");
  return 0;  // not reached: unknown selectors abort by default
}

int case_unknown_selector_warn() {
  // MLX_SIM_UNKNOWN_SELECTOR=warn: reported on stderr, returns 0
  long v = send<long>(device(), "thisSelectorDoesNotExist");
  metalsim_stats st;
  metalsim_get_stats(&st);
  printf("value %ld unknown %lu\n", v, (unsigned long)st.unknown_selectors);
  return v == 0 && st.unknown_selectors == 1 ? 0 : 1;
}

int case_zombie() {
  Class c = metalsim_define_class("TestZombie", nullptr);
  id o = send<id>(send<id>(c, "alloc"), "init");
  send<void>(o, "release");
  CHECK(metalsim_is_zombie(o));
  send<unsigned long>(o, "hash");  // aborts: message to a deallocated object
  return 0;
}

int case_autorelease() {
  id pool = new_pool();
  id s = make_string("autoreleased");
  send<id>(s, "retain");
  CHECK(metalsim_retain_count(s) == 2);
  send<void>(pool, "release");
  CHECK(!metalsim_is_zombie(s));
  CHECK(metalsim_retain_count(s) == 1);
  send<void>(s, "release");
  CHECK(metalsim_is_zombie(s));
  printf("autorelease ok\n");
  return failures ? 1 : 0;
}

int run_lifetime(bool retained) {
  id pool = new_pool();
  metalsim_set_gpu_delay_us(20000, 0);  // the GPU runs 20 ms after commit
  id dev = device();
  id queue = send<id>(dev, "newCommandQueue");
  id buf = send<id>(dev, "newBufferWithLength:options:", 4096UL, 0UL);
  id cb = encode_using(queue, buf, retained);
  send<void>(cb, "commit");
  send<void>(buf, "release");  // MLX's cache trim: released while the GPU has not run
  bool dead_before = metalsim_is_zombie(buf);
  send<void>(cb, "waitUntilCompleted");
  long status = send<long>(cb, "status");
  id err = send<id>(cb, "error");
  printf("status %ld dead_before_completion %d dead_after %d\n", status, dead_before ? 1 : 0,
         metalsim_is_zombie(buf));
  if (err) {
    printf("error %ld %s\n", send<long>(err, "code"),
           send<const char*>(send<id>(err, "localizedDescription"), "UTF8String"));
  }
  send<void>(cb, "release");
  send<void>(pool, "release");
  // retained: the command buffer kept the buffer alive and released it after
  // completion; unretained: it died at once and the GPU saw a released buffer.
  usleep(20000);  // the GPU thread drops its references after the handlers
  printf("dead_at_end %d\n", metalsim_is_zombie(buf));
  return 0;
}

int case_unretained() {
  return run_lifetime(false);
}
int case_retained() {
  return run_lifetime(true);
}

int case_inject_oom() {
  id pool = new_pool();
  id dev = device();
  id queue = send<id>(dev, "newCommandQueue");
  id buf = send<id>(dev, "newBufferWithLength:options:", 256UL, 0UL);
  metalsim_fail_next_commit(METALSIM_ERROR_OUT_OF_MEMORY);
  id cb1 = encode_using(queue, buf, false);
  send<void>(cb1, "commit");
  id cb2 = encode_using(queue, buf, false);
  send<void>(cb2, "commit");
  send<void>(cb2, "waitUntilCompleted");
  send<void>(cb1, "waitUntilCompleted");
  id err = send<id>(cb1, "error");
  printf("first status %ld code %ld domain %s: %s\n", send<long>(cb1, "status"), send<long>(err, "code"),
         send<const char*>(send<id>(err, "domain"), "UTF8String"),
         send<const char*>(send<id>(err, "localizedDescription"), "UTF8String"));
  printf("second status %ld error %p\n", send<long>(cb2, "status"), (void*)send<id>(cb2, "error"));
  send<void>(pool, "release");
  return 0;
}

int case_inject_env() {
  // MLX_SIM_FAIL_CB=2 MLX_SIM_FAIL_CODE=timeout: the second commit fails
  id pool = new_pool();
  id dev = device();
  id queue = send<id>(dev, "newCommandQueue");
  id buf = send<id>(dev, "newBufferWithLength:options:", 256UL, 0UL);
  long statuses[3];
  for (long& s : statuses) {
    id cb = encode_using(queue, buf, true);
    send<void>(cb, "commit");
    send<void>(cb, "waitUntilCompleted");
    s = send<long>(cb, "status");
    id err = send<id>(cb, "error");
    printf("status %ld code %ld\n", s, err ? send<long>(err, "code") : 0L);
  }
  send<void>(pool, "release");
  return 0;
}

int case_handler_thread() {
  id pool = new_pool();
  id dev = device();
  id queue = send<id>(dev, "newCommandQueue");
  id buf = send<id>(dev, "newBufferWithLength:options:", 256UL, 0UL);
  id cb = encode_using(queue, buf, true);
  __block std::thread::id handler_thread;
  __block long seen_status = -1;
  void (^handler)(id) = ^(id c) {
    handler_thread = std::this_thread::get_id();
    seen_status = send<long>(c, "status");
  };
  send<void>(cb, "addCompletedHandler:", handler);
  send<void>(cb, "commit");
  send<void>(cb, "waitUntilCompleted");
  printf("handler ran on main thread: %d, status in handler %ld\n",
         handler_thread == std::this_thread::get_id() ? 1 : 0, seen_status);
  send<void>(pool, "release");
  return 0;
}

int case_late_handlers() {
  // MLX_SIM_LATE_HANDLERS_US=50000: waitUntilCompleted returns before the handler runs
  id pool = new_pool();
  id dev = device();
  id queue = send<id>(dev, "newCommandQueue");
  id buf = send<id>(dev, "newBufferWithLength:options:", 256UL, 0UL);
  id cb = encode_using(queue, buf, true);
  static std::atomic<int> ran{0};
  send<void>(cb, "addCompletedHandler:", ^(id) { ran = 1; });
  send<void>(cb, "commit");
  send<void>(cb, "waitUntilCompleted");
  int at_wait = ran.load();
  usleep(200000);
  printf("handler ran before wait returned: %d, later: %d\n", at_wait, ran.load());
  send<void>(pool, "release");
  return 0;
}

int case_handler_after_commit() {
  id pool = new_pool();
  id dev = device();
  id queue = send<id>(dev, "newCommandQueue");
  id buf = send<id>(dev, "newBufferWithLength:options:", 256UL, 0UL);
  metalsim_set_gpu_delay_us(100000, 0);
  id cb = encode_using(queue, buf, true);
  send<void>(cb, "commit");
  send<void>(cb, "addCompletedHandler:", ^(id) {});  // aborts, as Metal raises
  send<void>(pool, "release");
  return 0;
}

int case_two_encoders() {
  id pool = new_pool();
  id queue = send<id>(device(), "newCommandQueue");
  id cb = send<id>(queue, "commandBuffer");
  send<id>(cb, "computeCommandEncoderWithDispatchType:", 1UL);
  send<id>(cb, "computeCommandEncoderWithDispatchType:", 1UL);  // aborts
  send<void>(pool, "release");
  return 0;
}

int case_handler_throws() {
  id pool = new_pool();
  id queue = send<id>(device(), "newCommandQueue");
  id buf = send<id>(device(), "newBufferWithLength:options:", 256UL, 0UL);
  metalsim_fail_next_commit(METALSIM_ERROR_OUT_OF_MEMORY);
  id cb = encode_using(queue, buf, true);
  send<void>(cb, "addCompletedHandler:", ^(id c) {
    if (send<long>(c, "status") == 5) {
      throw std::runtime_error("[METAL] Command buffer execution failed");
    }
  });
  try {
    send<void>(cb, "commit");
    send<void>(cb, "waitUntilCompleted");
  } catch (...) {
    printf("caught on the main thread (not expected)\n");
  }
  usleep(100000);
  send<void>(pool, "release");
  printf("survived (not expected)\n");
  return 0;
}

int case_error_out_param() {
  id pool = new_pool();
  id dev = device();
  id err = reinterpret_cast<id>(0x1);  // garbage, as MLX leaves it uninitialized
  id lib = send<id>(dev, "newLibraryWithFile:error:", make_string("/nonexistent/mlx.metallib"), &err);
  CHECK(lib == nullptr);
  CHECK(err != nullptr && err != reinterpret_cast<id>(0x1));
  if (err && err != reinterpret_cast<id>(0x1)) {
    printf("missing: code %ld %s\n", send<long>(err, "code"),
           send<const char*>(send<id>(err, "localizedDescription"), "UTF8String"));
  }
  char path[] = "/tmp/metalsim-selftest-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK(write(fd, "MTLB-placeholder", 16) == 16);
  close(fd);
  err = reinterpret_cast<id>(0x1);
  lib = send<id>(dev, "newLibraryWithFile:error:", make_string(path), &err);
  unlink(path);
  CHECK(lib != nullptr);
  CHECK(err == nullptr);  // set to nil on success
  id fn = send<id>(lib, "newFunctionWithName:", make_string("copy_float32"));
  id pipe = send<id>(dev, "newComputePipelineStateWithFunction:error:", fn, &err);
  CHECK(pipe != nullptr && err == nullptr);
  CHECK(send<unsigned long>(pipe, "maxTotalThreadsPerThreadgroup") == 1024);
  send<void>(pool, "release");
  printf("error out-param ok\n");
  return failures ? 1 : 0;
}

int case_shared_event() {
  id pool = new_pool();
  id dev = device();
  id queue = send<id>(dev, "newCommandQueue");
  id ev = send<id>(dev, "newSharedEvent");
  id cb = send<id>(queue, "commandBuffer");
  send<void>(cb, "encodeWaitForEvent:value:", ev, 3UL);
  send<void>(cb, "encodeSignalEvent:value:", ev, 5UL);
  send<void>(cb, "commit");
  usleep(50000);
  long before = send<long>(cb, "status");
  send<void>(ev, "setSignaledValue:", 3UL);  // the CPU releases the GPU wait
  send<void>(cb, "waitUntilCompleted");
  bool reached = send<bool>(ev, "waitUntilSignaledValue:timeoutMS:", 5UL, UINT64_MAX);
  bool timed_out = !send<bool>(ev, "waitUntilSignaledValue:timeoutMS:", 6UL, 10UL);
  printf("status while waiting %ld, after %ld, value %lu, reached %d, timeout %d\n", before,
         send<long>(cb, "status"), send<unsigned long>(ev, "signaledValue"), reached, timed_out);
  send<void>(pool, "release");
  return 0;
}

int case_memory() {
  // MLX_SIM_MEMORY_SIZE=1073741824
  uint64_t mem = 0;
  size_t len = sizeof mem;
  int rc = sysctlbyname("hw.memsize", &mem, &len, nullptr, 0);
  unsigned long rec = send<unsigned long>(device(), "recommendedMaxWorkingSetSize");
  metalsim_set_alloc_limit(1 << 20);
  id pool = new_pool();
  id big = send<id>(device(), "newBufferWithLength:options:", 2UL << 20, 0UL);
  printf("sysctl %d memsize %lu recommended %lu big %s\n", rc, (unsigned long)mem, rec,
         big ? "allocated" : "nil");
  send<void>(pool, "release");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::function<int()>> cases = {
      {"dispatch", case_dispatch},
      {"unknown-selector", case_unknown_selector},
      {"unknown-selector-warn", case_unknown_selector_warn},
      {"zombie", case_zombie},
      {"autorelease", case_autorelease},
      {"unretained", case_unretained},
      {"retained", case_retained},
      {"inject-oom", case_inject_oom},
      {"inject-env", case_inject_env},
      {"handler-thread", case_handler_thread},
      {"late-handlers", case_late_handlers},
      {"handler-after-commit", case_handler_after_commit},
      {"two-encoders", case_two_encoders},
      {"handler-throws", case_handler_throws},
      {"error-out-param", case_error_out_param},
      {"shared-event", case_shared_event},
      {"memory", case_memory},
  };
  if (argc != 2 || !cases.count(argv[1])) {
    fprintf(stderr, "usage: selftest CASE\n");
    return 2;
  }
  int rc = cases[argv[1]]();
  fflush(stdout);
  return rc;
}
