// Stand-in: the opaque IOSurface handle.
#pragma once
typedef struct __IOSurface* IOSurfaceRef;
