// The BatchedLora custom operator (domain com.loraserve), for a group of G = 1..3 projections sharing an input.
//
// Inputs:  x [rows, seq, in] float32, row_slots [rows] int32 (0 = no adapter), slot_ranks [slots] int32,
//          then per projection p: y_p [rows, seq, out_p] float32 (base output), a_p [slots, in, R_p] and
//          b_p [slots, R_p, out_p] (float32, float16 or bfloat16, one type for the whole group; scale folded
//          into b). Output p: y_p plus the LoRA delta of each row's slot, at that slot's own rank.
// Shapes, types, slot indices and ranks are checked before any memory is read; a bad input fails the run
// with a message naming the input.
#pragma once

#include "ort-api.h"

namespace lora {

constexpr const char* kOpDomain = "com.loraserve";
constexpr const char* kOpName = "BatchedLora";

// The operator's schema and callbacks; lives for the whole process.
const ortc::CustomOp& BatchedLoraOp();

}  // namespace lora
