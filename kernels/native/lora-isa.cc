#include "lora-isa.h"

#include <atomic>

namespace lora {
namespace {

// Set by ForceIsa; null means "best supported". Kernels read it at each call, so a test can switch paths.
std::atomic<const Isa*> g_forced{nullptr};

}  // namespace

std::vector<const Isa*> SupportedIsas() {
  std::vector<const Isa*> isas;
#if defined(__x86_64__)
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    isas.push_back(&Avx512Isa());
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    isas.push_back(&Avx2Isa());
#endif
  isas.push_back(&PortableIsa());
  return isas;
}

const Isa& ActiveIsa() {
  if (const Isa* forced = g_forced.load(std::memory_order_relaxed)) return *forced;
  static const Isa* const best = SupportedIsas().front();
  return *best;
}

bool ForceIsa(const std::string& name) {
  if (name == "auto") {
    g_forced.store(nullptr);
    return true;
  }
  for (const Isa* isa : SupportedIsas()) {
    if (name == isa->name) {
      g_forced.store(isa);
      return true;
    }
  }
  return false;
}

}  // namespace lora
