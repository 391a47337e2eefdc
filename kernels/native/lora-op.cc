#include "lora-op.h"

#include <climits>
#include <cstring>
#include <exception>
#include <new>

#include "lora-isa.h"
#include "lora-plan.h"

namespace lora {
namespace {

// Below this many multiply-adds a call runs on the calling thread: waking the pool would cost more.
constexpr int64_t kParallelMinWork = 1 << 16;

struct Kernel {
  ortc::Api api;
};

struct Phase {
  const Isa* isa;
  const Problem* problem;
  const Task* tasks;
  bool expand;
};

void RunTask(void* data, size_t index) {
  const Phase& phase = *static_cast<const Phase*>(data);
  const Task& task = phase.tasks[index];
  if (phase.expand)
    phase.isa->expand(*phase.problem, task);
  else
    phase.isa->shrink(*phase.problem, task);
}

ortc::Status* RunPhase(const ortc::Api& api, const ortc::KernelContext* context, const Plan& plan, const Isa& isa,
                       const std::vector<Task>& tasks, bool expand) {
  Phase phase{&isa, &plan.problem, tasks.data(), expand};
  if (tasks.size() > 1 && plan.multiply_adds >= kParallelMinWork)
    return api.KernelContext_ParallelFor(context, RunTask, tasks.size(), 0, &phase);
  for (size_t i = 0; i < tasks.size(); ++i) RunTask(&phase, i);
  return nullptr;
}

ortc::Status* Compute(const ortc::Api& api, ortc::KernelContext* context) {
  Plan plan;
  if (ortc::Status* status = BuildPlan(api, context, plan)) return status;
  const Problem& pb = plan.problem;
  // Rows without an adapter get their base output unchanged (nothing to do when bound in place).
  for (int p = 0; p < pb.projections; ++p) {
    const Projection& pr = pb.proj[p];
    if (pr.out == pr.y) continue;
    const int64_t row_floats = pb.seq * pr.out_features;
    for (const int64_t row : plan.inactive_rows)
      std::memmove(pr.out + row * row_floats, pr.y + row * row_floats, sizeof(float) * row_floats);
  }
  const Isa& isa = ActiveIsa();
  if (ortc::Status* status = RunPhase(api, context, plan, isa, plan.shrink_tasks, false)) return status;
  return RunPhase(api, context, plan, isa, plan.expand_tasks, true);
}

ortc::Status* ComputeV2(void* kernel, ortc::KernelContext* context) noexcept {
  const ortc::Api& api = static_cast<Kernel*>(kernel)->api;
  try {
    return Compute(api, context);
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ortc::kRuntimeException, "BatchedLora: out of memory");
  } catch (const std::exception& e) {
    return api.CreateStatus(ortc::kRuntimeException, e.what());
  }
}

ortc::Status* CreateKernelV2(const ortc::CustomOp*, const ortc::ApiTable* api, const ortc::KernelInfo*,
                             void** kernel) noexcept {
  *kernel = new (std::nothrow) Kernel{ortc::Api(api)};
  return *kernel ? nullptr : ortc::Api(api).CreateStatus(ortc::kRuntimeException, "BatchedLora: out of memory");
}

void DestroyKernel(void* kernel) noexcept { delete static_cast<Kernel*>(kernel); }

const char* Name(const ortc::CustomOp*) noexcept { return kOpName; }
const char* Provider(const ortc::CustomOp*) noexcept { return "CPUExecutionProvider"; }

// x, row_slots, slot_ranks, then the (y, a, b) triples as one variadic input of mixed types.
ortc::ElementType InputType(const ortc::CustomOp*, size_t index) noexcept {
  return index == 0 ? ortc::kFloat : index < 3 ? ortc::kInt32 : ortc::kUndefined;
}
size_t InputCount(const ortc::CustomOp*) noexcept { return 4; }
ortc::IoCharacteristic InputCharacteristic(const ortc::CustomOp*, size_t index) noexcept {
  return index < 3 ? ortc::kRequired : ortc::kVariadic;
}
ortc::ElementType OutputType(const ortc::CustomOp*, size_t) noexcept { return ortc::kFloat; }
size_t OutputCount(const ortc::CustomOp*) noexcept { return 1; }
ortc::IoCharacteristic OutputCharacteristic(const ortc::CustomOp*, size_t) noexcept { return ortc::kVariadic; }
ortc::MemType InputMemoryType(const ortc::CustomOp*, size_t) noexcept { return ortc::kMemTypeDefault; }
int VariadicInputMinArity(const ortc::CustomOp*) noexcept { return 3; }
int VariadicInputHomogeneity(const ortc::CustomOp*) noexcept { return 0; }
int VariadicOutputMinArity(const ortc::CustomOp*) noexcept { return 1; }
int VariadicOutputHomogeneity(const ortc::CustomOp*) noexcept { return 1; }
int StartVersion(const ortc::CustomOp*) noexcept { return 1; }
int EndVersion(const ortc::CustomOp*) noexcept { return INT_MAX; }

ortc::CustomOp MakeOp() {
  ortc::CustomOp op{};
  op.version = ortc::kApiVersion;
  op.GetName = Name;
  op.GetExecutionProviderType = Provider;
  op.GetInputType = InputType;
  op.GetInputTypeCount = InputCount;
  op.GetOutputType = OutputType;
  op.GetOutputTypeCount = OutputCount;
  op.KernelDestroy = DestroyKernel;
  op.GetInputCharacteristic = InputCharacteristic;
  op.GetOutputCharacteristic = OutputCharacteristic;
  op.GetInputMemoryType = InputMemoryType;
  op.GetVariadicInputMinArity = VariadicInputMinArity;
  op.GetVariadicInputHomogeneity = VariadicInputHomogeneity;
  op.GetVariadicOutputMinArity = VariadicOutputMinArity;
  op.GetVariadicOutputHomogeneity = VariadicOutputHomogeneity;
  op.CreateKernelV2 = CreateKernelV2;
  op.KernelComputeV2 = ComputeV2;
  op.GetStartVersion = StartVersion;
  op.GetEndVersion = EndVersion;
  return op;
}

}  // namespace

const ortc::CustomOp& BatchedLoraOp() {
  static const ortc::CustomOp op = MakeOp();
  return op;
}

}  // namespace lora
