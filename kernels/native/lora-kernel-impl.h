// The batched LoRA kernel body, compiled once per instruction set: each lora-kernel-<isa>.cc defines `Vec`
// (W float lanes: zero, bcast, load from float/Half/BHalf, fma, store) inside lora::{anonymous} under its own
// target options, then includes this file. Everything here has internal linkage, so no copy built for one
// instruction set can be picked up by code that runs on a CPU without it.
//
// Included only by lora-kernel-*.cc, after lora-kernel.h and their own Vec.

namespace lora {
namespace {

inline float ToFloat(float v) { return v; }
inline float ToFloat(BHalf v) {
  const uint32_t bits = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float ToFloat(Half v) {
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  const uint32_t exponent = (v.bits >> 10) & 0x1fu;
  const uint32_t mantissa = v.bits & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float.
    float f = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, sizeof bits);
    bits |= sign;
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

constexpr int kW = Vec::W;
// Most accumulators a micro-kernel keeps (tokens x vectors), so they stay in registers.
constexpr int kMaxAcc = Vec::kMaxAcc;
constexpr int kTokenTile = 4;

// One full-width strip of A: lanes [c*W, c*W + W) of every row k, at a + k * stride.
template <typename T>
struct Strip {
  const T* a;
  int64_t stride;
  int64_t dst;  // offset in a token's scratch row
};

template <typename T, int TT, int NV>
void ShrinkMicro(const float* const* x, int64_t in, const Strip<T>* strips, float* const* h) {
  typename Vec::reg acc[TT][NV];
  for (int t = 0; t < TT; ++t)
    for (int v = 0; v < NV; ++v) acc[t][v] = Vec::zero();
  for (int64_t k = 0; k < in; ++k) {
    typename Vec::reg xv[TT];
    for (int t = 0; t < TT; ++t) xv[t] = Vec::bcast(x[t][k]);
    for (int v = 0; v < NV; ++v) {
      const typename Vec::reg a = Vec::load(strips[v].a + k * strips[v].stride);
      for (int t = 0; t < TT; ++t) acc[t][v] = Vec::fma(xv[t], a, acc[t][v]);
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int v = 0; v < NV; ++v) Vec::store(h[t] + strips[v].dst, acc[t][v]);
}

// Runs strips [0, n) through micro-kernels of NV strips, then halves NV for what is left.
template <typename T, int TT, int NV>
void ShrinkStrips(const float* const* x, int64_t in, const Strip<T>* strips, int64_t n, float* const* h) {
  if constexpr (TT * NV <= kMaxAcc) {
    for (; n >= NV; n -= NV, strips += NV) ShrinkMicro<T, TT, NV>(x, in, strips, h);
  }
  if constexpr (NV > 1) ShrinkStrips<T, TT, NV / 2>(x, in, strips, n, h);
}

// Lanes of A that a full-width load cannot reach without leaving the tensor, one scalar column at a time.
template <typename T>
void ShrinkColumn(const float* x, int64_t in, const T* a, int64_t stride, float* h) {
  float sum = 0.f;
  for (int64_t k = 0; k < in; ++k) sum += x[k] * ToFloat(a[k * stride]);
  *h = sum;
}

inline int64_t TokenOffset(const Problem& pb, const Segment& seg, int64_t j) {
  return pb.rows[seg.first_row + j / pb.seq] * pb.seq + j % pb.seq;
}

template <typename T>
void Shrink(const Problem& pb, const Task& task) {
  const Segment& seg = pb.segments[task.segment];
  const int64_t padded = PaddedRank(seg.rank);
  const int64_t row_stride = pb.projections * padded;
  float* scratch = pb.scratch + seg.scratch;
  Strip<T> strips[kMaxProjections * (kMaxRank / kW)];
  int64_t n = 0;
  // Columns past the last full strip of a projection: fewer than W each.
  Strip<T> columns[kMaxProjections * kW];
  int64_t m = 0;
  for (int p = 0; p < pb.projections; ++p) {
    const Projection& pr = pb.proj[p];
    const T* a = static_cast<const T*>(pr.a) + seg.slot * pb.in_features * pr.max_rank;
    int64_t c = 0;
    for (; c < seg.rank && c + kW <= pr.max_rank; c += kW)
      strips[n++] = {a + c, pr.max_rank, p * padded + c};
    for (; c < seg.rank; ++c) columns[m++] = {a + c, pr.max_rank, p * padded + c};
  }
  for (int64_t j = task.token_begin; j < task.token_end;) {
    const int64_t left = task.token_end - j;
    const int tt = left >= 4 ? 4 : left >= 2 ? 2 : 1;
    const float* x[kTokenTile];
    float* h[kTokenTile];
    for (int t = 0; t < tt; ++t) {
      x[t] = pb.x + TokenOffset(pb, seg, j + t) * pb.in_features;
      h[t] = scratch + (j + t) * row_stride;
    }
    if (tt == 4) ShrinkStrips<T, 4, 8>(x, pb.in_features, strips, n, h);
    if (tt == 2) ShrinkStrips<T, 2, 8>(x, pb.in_features, strips, n, h);
    if (tt == 1) ShrinkStrips<T, 1, 8>(x, pb.in_features, strips, n, h);
    for (int t = 0; t < tt; ++t)
      for (int64_t i = 0; i < m; ++i)
        ShrinkColumn(x[t], pb.in_features, columns[i].a, columns[i].stride, h[t] + columns[i].dst);
    j += tt;
  }
}

template <typename T, int TT, int NV>
void ExpandMicro(const float* const* h, int32_t rank, const T* b, int64_t ldb, const float* const* y,
                 float* const* out) {
  typename Vec::reg acc[TT][NV];
  for (int t = 0; t < TT; ++t)
    for (int v = 0; v < NV; ++v) acc[t][v] = Vec::load(y[t] + v * kW);
  for (int32_t r = 0; r < rank; ++r) {
    typename Vec::reg hv[TT];
    for (int t = 0; t < TT; ++t) hv[t] = Vec::bcast(h[t][r]);
    for (int v = 0; v < NV; ++v) {
      const typename Vec::reg bv = Vec::load(b + r * ldb + v * kW);
      for (int t = 0; t < TT; ++t) acc[t][v] = Vec::fma(hv[t], bv, acc[t][v]);
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int v = 0; v < NV; ++v) Vec::store(out[t] + v * kW, acc[t][v]);
}

// Columns [col, col + n*W) for TT tokens, NV vectors at a time, halving NV for what is left.
template <typename T, int TT, int NV>
void ExpandVectors(const float* const* h, int32_t rank, const T* b, int64_t ldb, const float* const* y,
                   float* const* out, int64_t col, int64_t n) {
  if constexpr (TT * NV <= kMaxAcc) {
    for (; n >= NV; n -= NV, col += NV * kW) {
      const float* yc[TT];
      float* oc[TT];
      for (int t = 0; t < TT; ++t) {
        yc[t] = y[t] + col;
        oc[t] = out[t] + col;
      }
      ExpandMicro<T, TT, NV>(h, rank, b + col, ldb, yc, oc);
    }
  }
  if constexpr (NV > 1) ExpandVectors<T, TT, NV / 2>(h, rank, b, ldb, y, out, col, n);
}

template <typename T>
void Expand(const Problem& pb, const Task& task) {
  const Segment& seg = pb.segments[task.segment];
  const Projection& pr = pb.proj[task.projection];
  const int64_t padded = PaddedRank(seg.rank);
  const int64_t row_stride = pb.projections * padded;
  const float* scratch = pb.scratch + seg.scratch + task.projection * padded;
  const T* b = static_cast<const T*>(pr.b) + seg.slot * pr.max_rank * pr.out_features;
  const int64_t vectors = (task.col_end - task.col_begin) / kW;
  const int64_t tail = task.col_begin + vectors * kW;
  for (int64_t j = task.token_begin; j < task.token_end;) {
    const int64_t left = task.token_end - j;
    const int tt = left >= 4 ? 4 : left >= 2 ? 2 : 1;
    const float* h[kTokenTile];
    const float* y[kTokenTile];
    float* out[kTokenTile];
    for (int t = 0; t < tt; ++t) {
      const int64_t token = TokenOffset(pb, seg, j + t);
      h[t] = scratch + (j + t) * row_stride;
      y[t] = pr.y + token * pr.out_features;
      out[t] = pr.out + token * pr.out_features;
    }
    if (tt == 4) ExpandVectors<T, 4, 8>(h, seg.rank, b, pr.out_features, y, out, task.col_begin, vectors);
    if (tt == 2) ExpandVectors<T, 2, 8>(h, seg.rank, b, pr.out_features, y, out, task.col_begin, vectors);
    if (tt == 1) ExpandVectors<T, 1, 8>(h, seg.rank, b, pr.out_features, y, out, task.col_begin, vectors);
    for (int t = 0; t < tt; ++t)
      for (int64_t col = tail; col < task.col_end; ++col) {
        float sum = y[t][col];
        for (int32_t r = 0; r < seg.rank; ++r) sum += h[t][r] * ToFloat(b[r * pr.out_features + col]);
        out[t][col] = sum;
      }
    j += tt;
  }
}

void ShrinkAny(const Problem& pb, const Task& task) {
  switch (pb.proj[0].type) {
    case WeightType::kFloat32: return Shrink<float>(pb, task);
    case WeightType::kFloat16: return Shrink<Half>(pb, task);
    case WeightType::kBfloat16: return Shrink<BHalf>(pb, task);
  }
}

void ExpandAny(const Problem& pb, const Task& task) {
  switch (pb.proj[0].type) {
    case WeightType::kFloat32: return Expand<float>(pb, task);
    case WeightType::kFloat16: return Expand<Half>(pb, task);
    case WeightType::kBfloat16: return Expand<BHalf>(pb, task);
  }
}

}  // namespace
}  // namespace lora
