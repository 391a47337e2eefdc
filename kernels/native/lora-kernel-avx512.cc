// The batched LoRA kernel for CPUs with AVX-512F (16 float lanes, 32 vector registers).
#if defined(__x86_64__)
#include <cstdint>
#include <cstring>

#include "lora-kernel.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")
// GCC 12 reports its own _mm512_undefined_ps() inside _mm512_cvtph_ps as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace lora {
namespace {

struct Vec {
  using reg = __m512;
  static constexpr int W = 16;
  static constexpr int kMaxAcc = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg bcast(float v) { return _mm512_set1_ps(v); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load(const Half* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static reg load(const BHalf* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
};

}  // namespace
}  // namespace lora

#include "lora-kernel-impl.h"
#pragma GCC pop_options

namespace lora {
const Isa& Avx512Isa() {
  static constexpr Isa kIsa{"avx512", ShrinkAny, ExpandAny};
  return kIsa;
}
}  // namespace lora
#endif
