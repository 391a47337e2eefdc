// Compiled (never run) by native-api.test.ts against the official onnxruntime_c_api.h: every declaration in
// kernels/native/ort-api.h must name the same table entry, with the same signature, as the official header.
#include <onnxruntime_c_api.h>

#include <cstddef>
#include <type_traits>

#include "ort-api.h"

static_assert(ortc::kApiVersion <= ORT_API_VERSION, "the official header is older than the version the addon asks for");

// Maps a type written with ortc names to the same type written with the official names.
template <typename T>
struct Official {
  using type = T;
};
template <typename T>
struct Official<T*> {
  using type = typename Official<T>::type*;
};
template <typename T>
struct Official<const T> {
  using type = const typename Official<T>::type;
};
template <typename R, typename... A>
struct Official<R (*)(A...)> {
  using type = typename Official<R>::type (*)(typename Official<A>::type...);
};
// noexcept is no part of the C ABI: the official header marks some entries with it and not others.
template <typename R, typename... A>
struct Official<R (*)(A...) noexcept> {
  using type = typename Official<R (*)(A...)>::type;
};
template <typename T>
struct WithoutNoexcept {
  using type = T;
};
template <typename R, typename... A>
struct WithoutNoexcept<R (*)(A...) noexcept> {
  using type = R (*)(A...);
};
#define SAME_AS(ours, theirs) \
  template <>                 \
  struct Official<ours> {     \
    using type = theirs;      \
  };
SAME_AS(ortc::Env, OrtEnv)
SAME_AS(ortc::Status, OrtStatus)
SAME_AS(ortc::MemoryInfo, OrtMemoryInfo)
SAME_AS(ortc::IoBinding, OrtIoBinding)
SAME_AS(ortc::Session, OrtSession)
SAME_AS(ortc::Value, OrtValue)
SAME_AS(ortc::RunOptions, OrtRunOptions)
SAME_AS(ortc::TensorTypeAndShapeInfo, OrtTensorTypeAndShapeInfo)
SAME_AS(ortc::SessionOptions, OrtSessionOptions)
SAME_AS(ortc::CustomOpDomain, OrtCustomOpDomain)
SAME_AS(ortc::KernelInfo, OrtKernelInfo)
SAME_AS(ortc::KernelContext, OrtKernelContext)
SAME_AS(ortc::ShapeInferContext, OrtShapeInferContext)
SAME_AS(ortc::ApiTable, OrtApi)
SAME_AS(ortc::ApiBase, OrtApiBase)
SAME_AS(ortc::CustomOp, OrtCustomOp)
SAME_AS(ortc::Allocator, OrtAllocator)
SAME_AS(ortc::ErrorCode, OrtErrorCode)
SAME_AS(ortc::ElementType, ONNXTensorElementDataType)
SAME_AS(ortc::LoggingLevel, OrtLoggingLevel)
SAME_AS(ortc::GraphOptimizationLevel, GraphOptimizationLevel)
SAME_AS(ortc::ExecutionMode, ExecutionMode)
SAME_AS(ortc::AllocatorType, OrtAllocatorType)
SAME_AS(ortc::MemType, OrtMemType)
SAME_AS(ortc::IoCharacteristic, OrtCustomOpInputOutputCharacteristic)
#undef SAME_AS

template <typename Ours, typename Theirs>
constexpr bool kSame = std::is_same_v<typename Official<Ours>::type, typename WithoutNoexcept<Theirs>::type>;

#define CHECK_FUNCTION(name, index, ...)                                                 \
  static_assert(offsetof(OrtApi, name) == (index) * sizeof(void*), #name ": index");     \
  static_assert(kSame<ortc::Api::name##Fn, decltype(OrtApi::name)>, #name ": signature");
LORASERVE_ORT_FUNCTIONS(CHECK_FUNCTION)

static_assert(offsetof(OrtApiBase, GetApi) == offsetof(ortc::ApiBase, GetApi), "GetApi: offset");
static_assert(offsetof(OrtApiBase, GetVersionString) == offsetof(ortc::ApiBase, GetVersionString),
              "GetVersionString: offset");
static_assert(kSame<decltype(ortc::ApiBase::GetApi), decltype(OrtApiBase::GetApi)>, "GetApi: signature");
static_assert(kSame<decltype(ortc::ApiBase::GetVersionString), decltype(OrtApiBase::GetVersionString)>,
              "GetVersionString: signature");
static_assert(kSame<ortc::GetApiBaseFn, decltype(&OrtGetApiBase)>, "OrtGetApiBase");

#define CHECK_FIELD(name)                                                                           \
  static_assert(offsetof(ortc::CustomOp, name) == offsetof(OrtCustomOp, name), "CustomOp." #name); \
  static_assert(kSame<decltype(ortc::CustomOp::name), decltype(OrtCustomOp::name)>, "CustomOp." #name ": type");
CHECK_FIELD(version)
CHECK_FIELD(CreateKernel)
CHECK_FIELD(GetName)
CHECK_FIELD(GetExecutionProviderType)
CHECK_FIELD(GetInputType)
CHECK_FIELD(GetInputTypeCount)
CHECK_FIELD(GetOutputType)
CHECK_FIELD(GetOutputTypeCount)
CHECK_FIELD(KernelCompute)
CHECK_FIELD(KernelDestroy)
CHECK_FIELD(GetInputCharacteristic)
CHECK_FIELD(GetOutputCharacteristic)
CHECK_FIELD(GetInputMemoryType)
CHECK_FIELD(GetVariadicInputMinArity)
CHECK_FIELD(GetVariadicInputHomogeneity)
CHECK_FIELD(GetVariadicOutputMinArity)
CHECK_FIELD(GetVariadicOutputHomogeneity)
CHECK_FIELD(CreateKernelV2)
CHECK_FIELD(KernelComputeV2)
CHECK_FIELD(InferOutputShapeFn)
CHECK_FIELD(GetStartVersion)
CHECK_FIELD(GetEndVersion)
// Nothing beyond the version's last field: the runtime would not read it.
static_assert(sizeof(ortc::CustomOp) == offsetof(ortc::CustomOp, GetEndVersion) + sizeof(void*), "CustomOp: size");

#define CHECK_VALUE(ours, theirs) static_assert(static_cast<int>(ours) == static_cast<int>(theirs), #ours);
CHECK_VALUE(ortc::kOk, ORT_OK)
CHECK_VALUE(ortc::kFail, ORT_FAIL)
CHECK_VALUE(ortc::kInvalidArgument, ORT_INVALID_ARGUMENT)
CHECK_VALUE(ortc::kRuntimeException, ORT_RUNTIME_EXCEPTION)
CHECK_VALUE(ortc::kUndefined, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)
CHECK_VALUE(ortc::kFloat, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
CHECK_VALUE(ortc::kUint8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
CHECK_VALUE(ortc::kInt32, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
CHECK_VALUE(ortc::kInt64, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
CHECK_VALUE(ortc::kBool, ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL)
CHECK_VALUE(ortc::kFloat16, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)
CHECK_VALUE(ortc::kBfloat16, ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16)
CHECK_VALUE(ortc::kLogVerbose, ORT_LOGGING_LEVEL_VERBOSE)
CHECK_VALUE(ortc::kLogWarning, ORT_LOGGING_LEVEL_WARNING)
CHECK_VALUE(ortc::kLogError, ORT_LOGGING_LEVEL_ERROR)
CHECK_VALUE(ortc::kLogFatal, ORT_LOGGING_LEVEL_FATAL)
CHECK_VALUE(ortc::kOptDisableAll, ORT_DISABLE_ALL)
CHECK_VALUE(ortc::kOptBasic, ORT_ENABLE_BASIC)
CHECK_VALUE(ortc::kOptExtended, ORT_ENABLE_EXTENDED)
CHECK_VALUE(ortc::kOptAll, ORT_ENABLE_ALL)
CHECK_VALUE(ortc::kSequential, ORT_SEQUENTIAL)
CHECK_VALUE(ortc::kParallel, ORT_PARALLEL)
CHECK_VALUE(ortc::kDeviceAllocator, OrtDeviceAllocator)
CHECK_VALUE(ortc::kArenaAllocator, OrtArenaAllocator)
CHECK_VALUE(ortc::kMemTypeDefault, OrtMemTypeDefault)
CHECK_VALUE(ortc::kRequired, INPUT_OUTPUT_REQUIRED)
CHECK_VALUE(ortc::kOptional, INPUT_OUTPUT_OPTIONAL)
CHECK_VALUE(ortc::kVariadic, INPUT_OUTPUT_VARIADIC)
