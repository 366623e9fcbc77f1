// Fix: deferred errors.
// A command buffer fails on the GPU (out of memory here). Pristine MLX throws
// from the completion handler on the GPU thread -> std::terminate (SIGABRT).
// Patched MLX must report it as an ordinary exception at the next
// eval/synchronize, keep the stream usable, and let the caller tell an
// out-of-memory failure apart.
#include "scenario.h"

#include <cctype>
#include <string>

namespace {
std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

int main() {
  using namespace scenario;
  return run([] {
    // Warm up so the failure lands on an ordinary eval.
    mx::eval(mx::exp(mx::ones({64, 64})));
    long code = env_int("SCENARIO_ERROR_CODE", METALSIM_ERROR_OUT_OF_MEMORY);
    metalsim_fail_next_commit(code);
    std::string caught;
    try {
      auto y = mx::exp(mx::ones({256, 256})) + 1.0f;
      mx::eval(y);
      mx::synchronize();
    } catch (const std::exception& e) {
      caught = e.what();
    }
    if (caught.empty()) {
      fail("the failed command buffer was not reported to the caller");
    }
    std::printf("caught: %s\n", caught.c_str());
    auto l = lower(caught);
    if (code == METALSIM_ERROR_OUT_OF_MEMORY &&
        l.find("memory") == std::string::npos) {
      fail("an out-of-memory failure is not recognizable as such: " + caught);
    }
    // The stream must still work afterwards.
    for (int i = 0; i < 3; i++) {
      auto z = mx::sum(mx::exp(mx::ones({128, 128})));
      mx::eval(z);
    }
    mx::synchronize();
  });
}
