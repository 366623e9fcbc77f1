/* metal-sim: IOSurface is not simulated; metal-cpp only names the type. */
#pragma once
typedef struct __IOSurface* IOSurfaceRef;
