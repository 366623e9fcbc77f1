// Shared helpers of the metal-sim lifecycle scenarios.
//
// A scenario is one process. It prints "SCENARIO PASS" and exits 0 when MLX
// behaved correctly; anything else (an abort from the simulated Metal runtime,
// std::terminate, a crash, a wrong outcome printed as "SCENARIO FAIL: ...",
// a hang) is a failure. The process leaves through _exit after the verdict:
// the scenarios judge command-buffer lifecycles, not static destruction order
// at exit (the GPU threads of the simulator are still alive then).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "metal_sim.h"
#include "mlx/mlx.h"

namespace scenario {

namespace mx = mlx::core;

inline int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::atoi(v) : dflt;
}

[[noreturn]] inline void pass() {
  metalsim_stats st;
  metalsim_get_stats(&st);
  std::printf("stats: committed=%lu completed=%lu failed=%lu invalid_resource=%lu dispatches=%lu\n",
              (unsigned long)st.committed, (unsigned long)st.completed, (unsigned long)st.failed,
              (unsigned long)st.invalid_resource, (unsigned long)st.dispatches);
  std::printf("SCENARIO PASS\n");
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(0);
}

[[noreturn]] inline void fail(const std::string& why) {
  std::printf("SCENARIO FAIL: %s\n", why.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(1);
}

template <typename F>
int run(F body) {
  try {
    body();
  } catch (const std::exception& e) {
    fail(std::string("unexpected exception: ") + e.what());
  }
  pass();
}

}  // namespace scenario
