// Fix: retained command buffers / deferred cache release.
// async_eval with allocation churn under a tiny buffer cache and memory
// pressure, while the GPU completes late: the allocator's cache trim must not
// release an MTLBuffer that an in-flight command buffer still references.
// Pristine MLX on a Mac: "[METAL] Command buffer execution failed: Invalid
// Resource" abort when that happens. MLX 0.31.1's own ops keep these buffers
// alive (eval.cpp captures each primitive's inputs), so this runs green on
// pristine and guards the fixes against regressions; conv3d_pad is the
// built-in op that does release one early.
#include "scenario.h"

#include <deque>
#include <vector>

int main() {
  using namespace scenario;
  return run([] {
    int iters = env_int("SCENARIO_ITERS", 60);
    mx::set_cache_limit(env_int("SCENARIO_CACHE_LIMIT", 0));
    std::deque<mx::array> keep;  // recent results: a model's live state
    for (int i = 0; i < iters; i++) {
      int n = 128 + 64 * (i % 4);  // varying sizes: cache misses and trims
      auto a = mx::ones({n, n});
      auto b = mx::exp(a) * 2.0f + a;
      auto c = mx::matmul(b, mx::transpose(b));
      auto d = mx::softmax(c, std::vector<int>{-1});
      auto e = mx::sum(d, 0);
      auto f = mx::concatenate({e, mx::cumsum(e, 0)}, 0);
      auto g = mx::take(c, mx::arange(0, n, 2, mx::int32), 0);
      auto h = mx::sort(mx::reshape(g, {-1}));
      mx::async_eval({f, h});
      keep.push_back(f);
      keep.push_back(h);
      while (keep.size() > 4) {
        keep.pop_front();  // drop results whose command buffers may still be running
      }
      // Churn: short-lived temporaries evaluated on the same stream.
      auto t = mx::abs(mx::full({n * 4}, -1.0f)) + 1.0f;
      mx::async_eval({t});
    }
    mx::synchronize();
  });
}
