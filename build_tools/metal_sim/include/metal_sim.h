/* metal-sim: control and inspection API of the simulated Metal runtime.
 *
 * Scenario programs and tests link libmetalsim and call these to inject faults
 * and read what the fake saw. Every setting also has an environment variable
 * (read once, at the first message), so an unmodified program can be driven:
 *
 *   MLX_SIM_GPU_DELAY_US      each command buffer "runs" this long on its queue's GPU thread
 *   MLX_SIM_GPU_JITTER_US     plus a random 0..N us per command buffer
 *   MLX_SIM_FAIL_CB           fail the N-th committed command buffer (1-based, all queues)
 *   MLX_SIM_FAIL_CODE         its error: oom | invalid | timeout | internal | pagefault | <number>
 *   MLX_SIM_LATE_HANDLERS_US  wake waitUntilCompleted first, run completed handlers N us later
 *   MLX_SIM_MEMORY_SIZE       bytes of unified memory (hw.memsize); working set = 3/4 of it
 *   MLX_SIM_ALLOC_LIMIT       newBuffer returns nil once live buffer bytes would exceed this
 *   MLX_SIM_UNKNOWN_SELECTOR  abort (default) | warn: warn returns 0 for unknown messages
 *   MLX_SIM_GPU_TIMEOUT_MS    an encodeWaitForEvent not satisfied within this fails the
 *                             command buffer with a timeout error (default 20000)
 *   MLX_SIM_TRACE             1: print every message sent
 */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <objc/runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* MTLCommandBufferError codes (MTLCommandBuffer.hpp). */
enum {
  METALSIM_ERROR_INTERNAL = 1,
  METALSIM_ERROR_TIMEOUT = 2,
  METALSIM_ERROR_PAGE_FAULT = 3,
  METALSIM_ERROR_OUT_OF_MEMORY = 8,
  METALSIM_ERROR_INVALID_RESOURCE = 9,
};

struct metalsim_stats {
  uint64_t messages;              /* messages dispatched */
  uint64_t committed;             /* command buffers committed */
  uint64_t completed;             /* ... finished with status Completed */
  uint64_t failed;                /* ... finished with status Error (any code) */
  uint64_t invalid_resource;      /* ... of which Invalid Resource (released buffer in use) */
  uint64_t injected_failures;     /* ... of which injected by fault injection */
  uint64_t dispatches;            /* compute dispatches encoded */
  uint64_t buffers_live;          /* MTLBuffers allocated and not deallocated */
  uint64_t buffer_bytes_live;
  uint64_t objects_live;          /* all simulated objects not deallocated */
  uint64_t zombie_messages;       /* messages to deallocated objects (each aborts unless tested) */
  uint64_t unknown_selectors;     /* distinct unknown (class, selector) pairs seen in warn mode */
  uint64_t handler_threads_seen;  /* distinct threads that ran completed handlers */
};

void metalsim_get_stats(struct metalsim_stats* out);

/* Fault injection. Codes are MTLCommandBufferError values. */
void metalsim_set_gpu_delay_us(uint32_t delay_us, uint32_t jitter_us);
void metalsim_fail_next_commit(long code);            /* the next command buffer committed */
void metalsim_fail_commit_number(uint64_t n, long code); /* the n-th (1-based) committed */
void metalsim_set_late_handlers_us(uint32_t us);
void metalsim_set_memory_size(uint64_t bytes);         /* before the device is first used */
void metalsim_set_alloc_limit(uint64_t bytes);         /* 0 = none */

/* Zombie inspection: 1 if `obj` was a simulated object that has been deallocated. */
int metalsim_is_zombie(const void* obj);
long metalsim_retain_count(const void* obj);
/* Make messages to deallocated objects report and return 0 instead of aborting (tests). */
void metalsim_set_zombie_abort(int abort_on_zombie);

/* Classes for tests of the dispatcher itself. `super_name` NULL means NSObject.
 * Instances are plain objects (retain/release/autorelease from NSObject). */
Class metalsim_define_class(const char* name, const char* super_name);
void metalsim_add_method(Class cls, const char* selector, void* imp, int class_method);

#ifdef __cplusplus
}
#endif
