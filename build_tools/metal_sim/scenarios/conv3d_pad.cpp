// Fix: retained command buffers / deferred cache release, on a built-in op.
// Pristine MLX keeps the buffers of a primitive's inputs, siblings and
// registered temporaries alive until its command buffer completes; a buffer
// bound to the command buffer outside those lists is not. v0.31.1's 3-D
// convolution has one: when the input channels are not a multiple of 16,
// pad_and_slice_conv_3D_gpu (mlx/backend/metal/conv.cpp) pads the weights
// (and the input) with pad_gpu, whose fill kernel reads a one-element `zero`
// array that is dropped right after encoding, before the command buffer has
// been committed. Its MTLBuffer is then released at once when the cache is
// full (cache limit 0 here) or by an mx.clear_cache() issued before the GPU
// ran the fill: Invalid Resource abort on pristine. (With room in the cache
// the buffer is recycled instead and can be handed to the next allocation
// while the fill still has to read it: wrong values, which the simulator,
// having no numerics, cannot see.)
#include "scenario.h"

#include <deque>

int main() {
  using namespace scenario;
  return run([] {
    int iters = env_int("SCENARIO_ITERS", 20);
    int cache_limit = env_int("SCENARIO_CACHE_LIMIT", -1);  // -1: MLX's default
    bool clear = env_int("SCENARIO_CLEAR_CACHE", 0) != 0;
    if (cache_limit >= 0) {
      mx::set_cache_limit(cache_limit);
    }
    std::deque<mx::array> keep;  // recent results, as a model keeps its activations
    for (int i = 0; i < iters; i++) {
      auto x = mx::ones({1, 8, 8, 8, 3});  // NDHWC, C = 3: not a multiple of 16
      auto w = mx::full({8, 3, 3, 3, 3}, 0.5f);  // O, kD, kH, kW, C
      auto y = mx::conv3d(x, w);
      mx::async_eval({y});
      if (clear) {
        mx::clear_cache();  // without synchronizing first
      }
      keep.push_back(y);
      if (keep.size() > 2) {
        keep.pop_front();
      }
    }
    mx::synchronize();
  });
}
