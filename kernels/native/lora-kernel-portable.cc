// The batched LoRA kernel in plain C++ for any CPU: 8-lane arrays the compiler may vectorize for the baseline.
#include <cstdint>
#include <cstring>

#include "lora-kernel.h"

namespace lora {
namespace {

struct Vec {
  struct reg {
    float v[8];
  };
  static constexpr int W = 8;
  static constexpr int kMaxAcc = 8;
  static reg zero() { return {}; }
  static reg bcast(float f) {
    reg r;
    for (float& v : r.v) v = f;
    return r;
  }
  template <typename T>
  static reg load(const T* p);
  static reg fma(reg a, reg b, reg c) {
    for (int i = 0; i < W; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static void store(float* p, reg v) { std::memcpy(p, v.v, sizeof v.v); }
};

}  // namespace
}  // namespace lora

#include "lora-kernel-impl.h"

namespace lora {
namespace {
template <typename T>
Vec::reg Vec::load(const T* p) {
  reg r;
  for (int i = 0; i < W; ++i) r.v[i] = ToFloat(p[i]);
  return r;
}
}  // namespace

const Isa& PortableIsa() {
  static constexpr Isa kIsa{"portable", ShrinkAny, ExpandAny};
  return kIsa;
}
}  // namespace lora
