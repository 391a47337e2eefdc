// The part of the ONNX Runtime C API this addon uses, declared from the API's documented layout.
//
// The C API is append-only: `OrtGetApiBase()->GetApi(version)` returns a table of function pointers whose
// first entries never move, so a function is reached by its fixed index in that table. The addon asks for
// kApiVersion and refuses to run when the library does not serve it. test/kernels/native-api.test.ts
// compiles this header next to the official one and checks every index, signature and offset below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace ortc {

// 17 is the first version with KernelContext_ParallelFor and the custom-op fields used below
// (KernelComputeV2 since 16; shape inference and opset ranges since 17).
constexpr uint32_t kApiVersion = 17;

// Opaque handles owned by the runtime.
struct Env;
struct Status;
struct MemoryInfo;
struct IoBinding;
struct Session;
struct Value;
struct RunOptions;
struct TensorTypeAndShapeInfo;
struct SessionOptions;
struct CustomOpDomain;
struct KernelInfo;
struct KernelContext;
struct ShapeInferContext;
struct ApiTable;
struct CustomOp;
struct Allocator;

enum ErrorCode : int { kOk = 0, kFail = 1, kInvalidArgument = 2, kRuntimeException = 6 };

// ONNX TensorProto element types (the subset the addon binds or checks).
enum ElementType : int {
  kUndefined = 0,
  kFloat = 1,
  kUint8 = 2,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
  kFloat16 = 10,
  kBfloat16 = 16,
};

enum LoggingLevel : int { kLogVerbose = 0, kLogInfo = 1, kLogWarning = 2, kLogError = 3, kLogFatal = 4 };
enum GraphOptimizationLevel : int { kOptDisableAll = 0, kOptBasic = 1, kOptExtended = 2, kOptAll = 99 };
enum ExecutionMode : int { kSequential = 0, kParallel = 1 };
enum AllocatorType : int { kDeviceAllocator = 0, kArenaAllocator = 1 };
enum MemType : int { kMemTypeDefault = 0 };
enum IoCharacteristic : int { kRequired = 0, kOptional = 1, kVariadic = 2 };

struct ApiBase {
  const ApiTable* (*GetApi)(uint32_t version) noexcept;
  const char* (*GetVersionString)() noexcept;
};
// The one symbol looked up in the library.
using GetApiBaseFn = const ApiBase* (*)() noexcept;
constexpr const char* kGetApiBaseSymbol = "OrtGetApiBase";

using ParallelFn = void (*)(void* data, size_t index);

// X(name, index in the function table, return type, parameter types...)
#define LORASERVE_ORT_FUNCTIONS(X)                                                                            \
  X(CreateStatus, 0, Status*, ErrorCode, const char*)                                                       \
  X(GetErrorCode, 1, ErrorCode, const Status*)                                                              \
  X(GetErrorMessage, 2, const char*, const Status*)                                                         \
  X(CreateEnv, 3, Status*, LoggingLevel, const char*, Env**)                                                \
  X(CreateSession, 7, Status*, const Env*, const char*, const SessionOptions*, Session**)                   \
  X(CreateSessionOptions, 10, Status*, SessionOptions**)                                                    \
  X(SetSessionExecutionMode, 13, Status*, SessionOptions*, ExecutionMode)                                   \
  X(SetSessionLogSeverityLevel, 22, Status*, SessionOptions*, int)                                          \
  X(SetSessionGraphOptimizationLevel, 23, Status*, SessionOptions*, GraphOptimizationLevel)                 \
  X(SetIntraOpNumThreads, 24, Status*, SessionOptions*, int)                                                \
  X(SetInterOpNumThreads, 25, Status*, SessionOptions*, int)                                                \
  X(CreateCustomOpDomain, 26, Status*, const char*, CustomOpDomain**)                                       \
  X(CustomOpDomain_Add, 27, Status*, CustomOpDomain*, const CustomOp*)                                     \
  X(AddCustomOpDomain, 28, Status*, SessionOptions*, CustomOpDomain*)                                       \
  X(SessionGetInputCount, 30, Status*, const Session*, size_t*)                                             \
  X(SessionGetOutputCount, 31, Status*, const Session*, size_t*)                                            \
  X(SessionGetInputName, 36, Status*, const Session*, size_t, Allocator*, char**)                           \
  X(SessionGetOutputName, 37, Status*, const Session*, size_t, Allocator*, char**)                          \
  X(CreateRunOptions, 39, Status*, RunOptions**)                                                            \
  X(RunOptionsSetRunLogSeverityLevel, 41, Status*, RunOptions*, int)                                        \
  X(CreateTensorWithDataAsOrtValue, 49, Status*, const MemoryInfo*, void*, size_t, const int64_t*, size_t,  \
    ElementType, Value**)                                                                                   \
  X(GetTensorMutableData, 51, Status*, Value*, void**)                                                      \
  X(GetTensorElementType, 60, Status*, const TensorTypeAndShapeInfo*, ElementType*)                         \
  X(GetDimensionsCount, 61, Status*, const TensorTypeAndShapeInfo*, size_t*)                                \
  X(GetDimensions, 62, Status*, const TensorTypeAndShapeInfo*, int64_t*, size_t)                            \
  X(GetTensorTypeAndShape, 65, Status*, const Value*, TensorTypeAndShapeInfo**)                             \
  X(CreateCpuMemoryInfo, 69, Status*, AllocatorType, MemType, MemoryInfo**)                                 \
  X(AllocatorFree, 76, Status*, Allocator*, void*)                                                          \
  X(GetAllocatorWithDefaultOptions, 78, Status*, Allocator**)                                               \
  X(KernelContext_GetInputCount, 88, Status*, const KernelContext*, size_t*)                                \
  X(KernelContext_GetOutputCount, 89, Status*, const KernelContext*, size_t*)                               \
  X(KernelContext_GetInput, 90, Status*, const KernelContext*, size_t, const Value**)                       \
  X(KernelContext_GetOutput, 91, Status*, KernelContext*, size_t, const int64_t*, size_t, Value**)          \
  X(ReleaseEnv, 92, void, Env*)                                                                             \
  X(ReleaseStatus, 93, void, Status*)                                                                       \
  X(ReleaseMemoryInfo, 94, void, MemoryInfo*)                                                               \
  X(ReleaseSession, 95, void, Session*)                                                                     \
  X(ReleaseValue, 96, void, Value*)                                                                         \
  X(ReleaseRunOptions, 97, void, RunOptions*)                                                               \
  X(ReleaseTensorTypeAndShapeInfo, 99, void, TensorTypeAndShapeInfo*)                                       \
  X(ReleaseSessionOptions, 100, void, SessionOptions*)                                                      \
  X(ReleaseCustomOpDomain, 101, void, CustomOpDomain*)                                                      \
  X(RunWithBinding, 133, Status*, Session*, const RunOptions*, const IoBinding*)                            \
  X(CreateIoBinding, 134, Status*, Session*, IoBinding**)                                                   \
  X(ReleaseIoBinding, 135, void, IoBinding*)                                                                \
  X(BindInput, 136, Status*, IoBinding*, const char*, const Value*)                                         \
  X(BindOutput, 137, Status*, IoBinding*, const char*, const Value*)                                        \
  X(KernelContext_ParallelFor, 274, Status*, const KernelContext*, ParallelFn, size_t, size_t, void*)

// Typed calls through the function table: api.CreateEnv(level, id, &env) calls entry 3.
class Api {
 public:
  explicit Api(const ApiTable* table) : table_(reinterpret_cast<const AnyFn*>(table)) {}

#define LORASERVE_ORT_CALL(name, index, ret, ...)                                  \
  using name##Fn = ret (*)(__VA_ARGS__);                                            \
  static constexpr size_t k##name = index;                                          \
  template <typename... Args>                                                       \
  ret name(Args&&... args) const {                                                  \
    return reinterpret_cast<name##Fn>(table_[index])(std::forward<Args>(args)...); \
  }
  LORASERVE_ORT_FUNCTIONS(LORASERVE_ORT_CALL)
#undef LORASERVE_ORT_CALL

 private:
  using AnyFn = void (*)();
  const AnyFn* table_;
};

// A custom operator's schema and callbacks, laid out as at version kApiVersion: the runtime reads only the
// fields that existed at the version written into `version`. The callbacks must not throw.
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp* op, const ApiTable* api, const KernelInfo* info);
  const char* (*GetName)(const CustomOp* op);
  const char* (*GetExecutionProviderType)(const CustomOp* op);
  ElementType (*GetInputType)(const CustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const CustomOp* op);
  ElementType (*GetOutputType)(const CustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const CustomOp* op);
  void (*KernelCompute)(void* kernel, KernelContext* context);
  void (*KernelDestroy)(void* kernel);
  IoCharacteristic (*GetInputCharacteristic)(const CustomOp* op, size_t index);
  IoCharacteristic (*GetOutputCharacteristic)(const CustomOp* op, size_t index);
  MemType (*GetInputMemoryType)(const CustomOp* op, size_t index);
  int (*GetVariadicInputMinArity)(const CustomOp* op);
  int (*GetVariadicInputHomogeneity)(const CustomOp* op);
  int (*GetVariadicOutputMinArity)(const CustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const CustomOp* op);
  Status* (*CreateKernelV2)(const CustomOp* op, const ApiTable* api, const KernelInfo* info, void** kernel);
  Status* (*KernelComputeV2)(void* kernel, KernelContext* context);
  Status* (*InferOutputShapeFn)(const CustomOp* op, ShapeInferContext* context);
  int (*GetStartVersion)(const CustomOp* op);
  int (*GetEndVersion)(const CustomOp* op);
};

}  // namespace ortc
