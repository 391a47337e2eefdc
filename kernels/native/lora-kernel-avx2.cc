// The batched LoRA kernel for CPUs with AVX2, FMA and F16C (8 float lanes, 16 vector registers).
#if defined(__x86_64__)
#include <cstdint>
#include <cstring>

#include "lora-kernel.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

namespace lora {
namespace {

struct Vec {
  using reg = __m256;
  static constexpr int W = 8;
  static constexpr int kMaxAcc = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg bcast(float v) { return _mm256_set1_ps(v); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load(const Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static reg load(const BHalf* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
};

}  // namespace
}  // namespace lora

#include "lora-kernel-impl.h"
#pragma GCC pop_options

namespace lora {
const Isa& Avx2Isa() {
  static constexpr Isa kIsa{"avx2", ShrinkAny, ExpandAny};
  return kIsa;
}
}  // namespace lora
#endif
