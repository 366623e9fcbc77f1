// Stand-in: Mach types metal-cpp names (kern_return_t in MTLResource.hpp).
#pragma once
#include <stdint.h>
typedef int kern_return_t;
typedef unsigned int mach_port_t;
typedef mach_port_t task_id_token_t;
typedef uintptr_t vm_size_t;
#define KERN_SUCCESS 0
#include <mach/vm_page_size.h>
