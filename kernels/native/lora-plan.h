// Turns one BatchedLora call's inputs into checked kernel work: segments by slot, scratch, parallel tasks.
#pragma once

#include <cstdint>
#include <vector>

#include "lora-kernel.h"
#include "ort-api.h"

namespace lora {

struct Plan {
  Problem problem{};
  std::vector<int64_t> rows;           // row indices grouped by segment
  std::vector<Segment> segments;       // one per active slot
  std::vector<int64_t> inactive_rows;  // rows whose output is their base output
  std::vector<float> scratch;
  std::vector<Task> shrink_tasks;  // all finish before any expand task starts
  std::vector<Task> expand_tasks;
  int64_t multiply_adds = 0;
};

// Checks every input's type and shape, then the slot indices and ranks, before any activation or weight is read;
// creates the outputs and fills `plan`.
// Returns null, or a status naming the input at fault (the caller releases or returns it).
ortc::Status* BuildPlan(const ortc::Api& api, ortc::KernelContext* context, Plan& plan);

}  // namespace lora
