// Stand-in: Mach types metal-cpp names (kern_return_t in MTLResource.hpp).
#pragma once
#include <mach/vm_page_size.h>
typedef int kern_return_t;
typedef unsigned int mach_port_t;
typedef unsigned int task_id_token_t;
#define KERN_SUCCESS 0
