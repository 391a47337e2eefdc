#include "lora-plan.h"

#include <algorithm>
#include <string>

#include "lora-op.h"

namespace lora {
namespace {

// Work per parallel task: enough to outweigh handing it to a thread.
constexpr int64_t kShrinkTokens = 16;
constexpr int64_t kExpandTokens = 64;
constexpr int64_t kExpandColumns = 512;  // a multiple of every vector width

// Returns the failed call's status from the enclosing function.
#define LORA_TRY(expr)                                  \
  do {                                                  \
    if (ortc::Status* status_ = (expr)) return status_; \
  } while (0)

struct Tensor {
  ortc::ElementType type = ortc::kUndefined;
  std::vector<int64_t> dims;
  const ortc::Value* value = nullptr;
};

ortc::Status* Describe(const ortc::Api& api, const ortc::Value* value, Tensor& out) {
  ortc::TensorTypeAndShapeInfo* info = nullptr;
  LORA_TRY(api.GetTensorTypeAndShape(value, &info));
  size_t count = 0;
  ortc::Status* status = api.GetTensorElementType(info, &out.type);
  if (!status) status = api.GetDimensionsCount(info, &count);
  if (!status) {
    out.dims.resize(count);
    status = api.GetDimensions(info, out.dims.data(), count);
  }
  api.ReleaseTensorTypeAndShapeInfo(info);
  out.value = value;
  return status;
}

// "?" stands for a dimension of any size.
std::string DimsText(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + (dims[i] < 0 ? "?" : std::to_string(dims[i]));
  return text + "]";
}

const char* TypeName(ortc::ElementType type) {
  switch (type) {
    case ortc::kFloat: return "float32";
    case ortc::kFloat16: return "float16";
    case ortc::kBfloat16: return "bfloat16";
    case ortc::kInt32: return "int32";
    case ortc::kInt64: return "int64";
    default: return "another type";
  }
}

class Checker {
 public:
  explicit Checker(const ortc::Api& api) : api_(api) {}

  ortc::Status* Fail(const std::string& message) const {
    return api_.CreateStatus(ortc::kInvalidArgument, (std::string(kOpName) + ": " + message).c_str());
  }

  // Checks type and rank; `expected` dims of -1 take any size.
  ortc::Status* Expect(const Tensor& t, const std::string& name, ortc::ElementType type,
                       const std::vector<int64_t>& expected) const {
    if (t.type != type) return Fail(name + " must be " + TypeName(type) + ", got " + TypeName(t.type));
    bool ok = t.dims.size() == expected.size();
    for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || expected[i] == t.dims[i];
    if (!ok) return Fail(name + " has shape " + DimsText(t.dims) + ", expected " + DimsText(expected));
    return nullptr;
  }

 private:
  const ortc::Api& api_;
};

template <typename T>
ortc::Status* Data(const ortc::Api& api, const Tensor& t, T*& out) {
  void* data = nullptr;
  LORA_TRY(api.GetTensorMutableData(const_cast<ortc::Value*>(t.value), &data));
  out = static_cast<T*>(data);
  return nullptr;
}

WeightType ToWeightType(ortc::ElementType type) {
  return type == ortc::kFloat16 ? WeightType::kFloat16
                                : type == ortc::kBfloat16 ? WeightType::kBfloat16 : WeightType::kFloat32;
}

void AddTasks(Plan& plan) {
  const Problem& pb = plan.problem;
  for (int64_t s = 0; s < static_cast<int64_t>(plan.segments.size()); ++s) {
    const Segment& seg = plan.segments[s];
    const int64_t tokens = seg.row_count * pb.seq;
    for (int64_t t = 0; t < tokens; t += kShrinkTokens)
      plan.shrink_tasks.push_back({s, t, std::min(tokens, t + kShrinkTokens), 0, 0, 0});
    for (int p = 0; p < pb.projections; ++p) {
      const int64_t out = pb.proj[p].out_features;
      for (int64_t c = 0; c < out; c += kExpandColumns)
        for (int64_t t = 0; t < tokens; t += kExpandTokens)
          plan.expand_tasks.push_back(
              {s, t, std::min(tokens, t + kExpandTokens), p, c, std::min(out, c + kExpandColumns)});
      plan.multiply_adds += tokens * seg.rank * (pb.in_features + out);
    }
  }
}

// The inputs' types and shapes (no data read yet): x, row_slots, slot_ranks, then 1 to 3 triples (y, a, b).
ortc::Status* ReadInputs(const ortc::Api& api, ortc::KernelContext* context, const Checker& check,
                         std::vector<Tensor>& in) {
  size_t inputs = 0, outputs = 0;
  LORA_TRY(api.KernelContext_GetInputCount(context, &inputs));
  LORA_TRY(api.KernelContext_GetOutputCount(context, &outputs));
  if (inputs < 6 || (inputs - 3) % 3 != 0 || (inputs - 3) / 3 > kMaxProjections)
    return check.Fail("takes x, row_slots, slot_ranks and 1 to 3 triples (y, a, b); got " + std::to_string(inputs) +
                      " inputs");
  if (outputs != (inputs - 3) / 3) return check.Fail("has one output per projection; got " + std::to_string(outputs));
  in.resize(inputs);
  for (size_t i = 0; i < inputs; ++i) {
    const ortc::Value* value = nullptr;
    LORA_TRY(api.KernelContext_GetInput(context, i, &value));
    if (!value) return check.Fail("input " + std::to_string(i) + " is missing");
    LORA_TRY(Describe(api, value, in[i]));
  }
  return nullptr;
}

// Checks every type and shape against x and slot_ranks; fills the problem's sizes and the largest usable rank.
ortc::Status* CheckShapes(const Checker& check, const std::vector<Tensor>& in, Plan& plan, int64_t& rank_limit) {
  LORA_TRY(check.Expect(in[0], "x", ortc::kFloat, {-1, -1, -1}));
  const int64_t rows = in[0].dims[0], seq = in[0].dims[1], in_features = in[0].dims[2];
  LORA_TRY(check.Expect(in[1], "row_slots", ortc::kInt32, {rows}));
  LORA_TRY(check.Expect(in[2], "slot_ranks", ortc::kInt32, {-1}));
  const int64_t slots = in[2].dims[0];
  if (slots < 1) return check.Fail("slot_ranks must have at least one slot");
  const ortc::ElementType weight_type = in[4].type;
  if (weight_type != ortc::kFloat && weight_type != ortc::kFloat16 && weight_type != ortc::kBfloat16)
    return check.Fail(std::string("a_0 must be float32, float16 or bfloat16, got ") + TypeName(weight_type));
  Problem& pb = plan.problem;
  pb.in_features = in_features;
  pb.seq = seq;
  pb.projections = static_cast<int>((in.size() - 3) / 3);
  rank_limit = kMaxRank;
  for (int p = 0; p < pb.projections; ++p) {
    const Tensor &y = in[3 + 3 * p], &a = in[4 + 3 * p], &b = in[5 + 3 * p];
    const std::string n = std::to_string(p);
    LORA_TRY(check.Expect(y, "y_" + n, ortc::kFloat, {rows, seq, -1}));
    LORA_TRY(check.Expect(a, "a_" + n, weight_type, {slots, in_features, -1}));
    const int64_t max_rank = a.dims[2], out = y.dims[2];
    if (max_rank > kMaxRank)
      return check.Fail("a_" + n + " has rank " + std::to_string(max_rank) + ", above " + std::to_string(kMaxRank));
    LORA_TRY(check.Expect(b, "b_" + n, weight_type, {slots, max_rank, out}));
    rank_limit = std::min(rank_limit, max_rank);
    pb.proj[p] = {nullptr, nullptr, nullptr, nullptr, ToWeightType(weight_type), out, max_rank};
  }
  return nullptr;
}

// Every row's slot within [0, slots) and every slot's rank within [0, rank_limit]; counts the rows of each slot.
ortc::Status* CheckIndices(const Checker& check, const int32_t* row_slots, int64_t rows, const int32_t* slot_ranks,
                           int64_t rank_limit, std::vector<int64_t>& per_slot) {
  const int64_t slots = static_cast<int64_t>(per_slot.size());
  for (int64_t s = 0; s < slots; ++s)
    if (slot_ranks[s] < 0 || slot_ranks[s] > rank_limit)
      return check.Fail("slot_ranks[" + std::to_string(s) + "] = " + std::to_string(slot_ranks[s]) +
                        " is outside [0, " + std::to_string(rank_limit) + "]");
  for (int64_t r = 0; r < rows; ++r) {
    if (row_slots[r] < 0 || row_slots[r] >= slots)
      return check.Fail("row_slots[" + std::to_string(r) + "] = " + std::to_string(row_slots[r]) +
                        " is outside [0, " + std::to_string(slots) + ")");
    ++per_slot[row_slots[r]];
  }
  return nullptr;
}

// Groups the rows by slot: one segment per active slot (not slot 0, rank above 0), in slot order.
void BuildSegments(Plan& plan, const int32_t* row_slots, int64_t rows, const int32_t* slot_ranks,
                   const std::vector<int64_t>& per_slot) {
  const int64_t slots = static_cast<int64_t>(per_slot.size());
  const Problem& pb = plan.problem;
  std::vector<int64_t> segment_of(slots, -1);
  int64_t first = 0, scratch = 0;
  for (int64_t s = 1; s < slots; ++s) {
    if (per_slot[s] == 0 || slot_ranks[s] == 0) continue;
    segment_of[s] = static_cast<int64_t>(plan.segments.size());
    plan.segments.push_back({static_cast<int32_t>(s), slot_ranks[s], first, per_slot[s], scratch});
    first += per_slot[s];
    scratch += per_slot[s] * pb.seq * pb.projections * PaddedRank(slot_ranks[s]);
  }
  plan.rows.resize(first);
  plan.scratch.resize(scratch);
  std::vector<int64_t> filled(plan.segments.size(), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t seg = segment_of[row_slots[r]];
    if (seg < 0)
      plan.inactive_rows.push_back(r);
    else
      plan.rows[plan.segments[seg].first_row + filled[seg]++] = r;
  }
}

}  // namespace

ortc::Status* BuildPlan(const ortc::Api& api, ortc::KernelContext* context, Plan& plan) {
  const Checker check(api);
  std::vector<Tensor> in;
  LORA_TRY(ReadInputs(api, context, check, in));
  int64_t rank_limit = 0;
  LORA_TRY(CheckShapes(check, in, plan, rank_limit));
  const int64_t rows = in[0].dims[0], slots = in[2].dims[0];
  const int32_t *row_slots = nullptr, *slot_ranks = nullptr;
  LORA_TRY(Data(api, in[1], row_slots));
  LORA_TRY(Data(api, in[2], slot_ranks));
  std::vector<int64_t> per_slot(slots, 0);
  LORA_TRY(CheckIndices(check, row_slots, rows, slot_ranks, rank_limit, per_slot));

  Problem& pb = plan.problem;
  LORA_TRY(Data(api, in[0], pb.x));
  for (int p = 0; p < pb.projections; ++p) {
    Projection& pr = pb.proj[p];
    LORA_TRY(Data(api, in[3 + 3 * p], pr.y));
    LORA_TRY(Data(api, in[4 + 3 * p], pr.a));
    LORA_TRY(Data(api, in[5 + 3 * p], pr.b));
    ortc::Value* output = nullptr;
    const std::vector<int64_t>& dims = in[3 + 3 * p].dims;
    LORA_TRY(api.KernelContext_GetOutput(context, p, dims.data(), dims.size(), &output));
    LORA_TRY(Data(api, Tensor{ortc::kFloat, dims, output}, pr.out));
  }
  BuildSegments(plan, row_slots, rows, slot_ranks, per_slot);
  pb.rows = plan.rows.data();
  pb.segments = plan.segments.data();
  pb.segment_count = static_cast<int64_t>(plan.segments.size());
  pb.scratch = plan.scratch.data();
  AddTasks(plan);
  return nullptr;
}

}  // namespace lora
