// Fix: per-stream locks.
// Several threads, each making its own GPU stream and evaluating on it
// concurrently. Pristine MLX mutates shared Metal device state (the stream
// map, the kernel cache, command encoders) without locks: crashes or
// ThreadSanitizer reports.
#include "scenario.h"

#include <atomic>
#include <thread>
#include <vector>

int main() {
  using namespace scenario;
  return run([] {
    int nthreads = env_int("SCENARIO_THREADS", 4);
    int iters = env_int("SCENARIO_ITERS", 30);
    std::atomic<int> errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; t++) {
      threads.emplace_back([&, t] {
        try {
          auto s = mx::new_stream(mx::Device::gpu);
          for (int i = 0; i < iters; i++) {
            int n = 32 + 16 * ((t + i) % 4);
            auto a = mx::ones({n, n}, mx::float32, s);
            auto b = mx::matmul(mx::exp(a, s), a, s);
            auto c = mx::sum(mx::softmax(b, std::vector<int>{-1}, false, s), 0, false, s);
            if (i % 2) {
              mx::async_eval({c});
            } else {
              mx::eval({c});
            }
          }
          mx::synchronize(s);
        } catch (const std::exception& e) {
          std::printf("thread %d: %s\n", t, e.what());
          errors++;
        }
      });
    }
    for (auto& th : threads) th.join();
    if (errors) {
      fail(std::to_string(errors.load()) + " thread(s) failed");
    }
  });
}
