// Batched LoRA for a group of projections that read the same input, segmented by adapter slot (SGMV style).
//
// For every row i whose slot s = row_slots[i] is active (s != 0, rank[s] > 0), every token t of the row and
// every projection p of the group:
//   h_p[t]   = x[t] · A_p[s][:, :rank[s]]            (shrink, all projections in one pass over x[t])
//   out_p[t] = y_p[t] + h_p[t] · B_p[s][:rank[s], :]  (expand)
// and out_p[t] = y_p[t] bit for bit on every other row. Rows are grouped by slot, so each active slot's A and
// B are read once per call whatever the number of its rows.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lora {

constexpr int kMaxProjections = 3;
// Largest max_rank a weight stack may have (the kernel sizes fixed arrays by it).
constexpr int64_t kMaxRank = 1024;
// Scratch rows are padded to this many floats so full-width vector stores never cross a projection.
constexpr int64_t kRankAlign = 16;

enum class WeightType { kFloat32, kFloat16, kBfloat16 };
// 16-bit weights as stored: IEEE half and bfloat16 bit patterns.
struct Half {
  uint16_t bits;
};
struct BHalf {
  uint16_t bits;
};

struct Projection {
  const float* y;  // [tokens, out_features]
  float* out;      // [tokens, out_features]
  const void* a;   // [slots, in_features, max_rank]
  const void* b;   // [slots, max_rank, out_features]
  WeightType type;
  int64_t out_features;
  int64_t max_rank;
};

// The rows of one active slot.
struct Segment {
  int32_t slot;
  int32_t rank;
  int64_t first_row;  // index into Problem::rows
  int64_t row_count;
  int64_t scratch;    // offset of this segment's shrink results in Problem::scratch
};

struct Problem {
  const float* x;  // [tokens, in_features]
  int64_t in_features;
  int64_t seq;  // tokens per row
  int projections;
  Projection proj[kMaxProjections];
  const int64_t* rows;  // row indices, grouped by segment
  const Segment* segments;
  int64_t segment_count;
  // Per segment: [row_count * seq tokens][projections][padded rank] floats.
  float* scratch;
};

inline int64_t PaddedRank(int32_t rank) { return (rank + kRankAlign - 1) / kRankAlign * kRankAlign; }

// A unit of parallel work. Shrink tasks must all finish before expand tasks start.
struct Task {
  int64_t segment;
  int64_t token_begin;  // within the segment
  int64_t token_end;
  int projection;      // expand only
  int64_t col_begin;   // expand only
  int64_t col_end;
};

// One instruction-set implementation.
struct Isa {
  const char* name;
  void (*shrink)(const Problem& problem, const Task& task);
  void (*expand)(const Problem& problem, const Task& task);
};

const Isa& PortableIsa();
#if defined(__x86_64__)
const Isa& Avx2Isa();
const Isa& Avx512Isa();
#endif

}  // namespace lora
