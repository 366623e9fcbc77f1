/* metal-sim: mach types metal-cpp names. */
#pragma once
#include <stdint.h>
typedef int kern_return_t;
typedef unsigned int mach_port_t;
typedef mach_port_t task_id_token_t;
typedef uintptr_t vm_size_t;
