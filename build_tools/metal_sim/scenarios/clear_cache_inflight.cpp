// Fix: deferred cache release.
// clear_cache() right after async_eval, without synchronizing first (what
// applications now avoid by synchronizing before every clear): buffers
// released by the clear must not be ones in-flight command buffers use.
#include "scenario.h"

#include <vector>

int main() {
  using namespace scenario;
  return run([] {
    int iters = env_int("SCENARIO_ITERS", 40);
    std::vector<mx::array> results;
    for (int i = 0; i < iters; i++) {
      int n = 96 + 32 * (i % 3);
      auto a = mx::ones({n, n});
      auto b = mx::matmul(a, mx::exp(a)) + 1.0f;
      auto c = mx::softmax(b, std::vector<int>{-1});
      mx::async_eval({c});
      results.clear();
      results.push_back(c);
      mx::clear_cache();
    }
    mx::synchronize();
    mx::clear_cache();
  });
}
