/* metal-sim: libdispatch types metal-cpp names (no libdispatch is used). */
#pragma once
typedef struct dispatch_queue_s* dispatch_queue_t;
typedef struct dispatch_data_s* dispatch_data_t;
