#include "session.h"

#include <algorithm>
#include <cmath>

namespace native {
namespace {

struct ElementKind {
  const char* name;
  ortc::ElementType type;
  napi_typedarray_type array;
  size_t bytes;
};

// What each element type is bound from: float16 and bfloat16 travel as their bit patterns in a Uint16Array.
constexpr ElementKind kKinds[] = {
    {"float32", ortc::kFloat, napi_float32_array, 4},   {"float16", ortc::kFloat16, napi_uint16_array, 2},
    {"bfloat16", ortc::kBfloat16, napi_uint16_array, 2}, {"int32", ortc::kInt32, napi_int32_array, 4},
    {"int64", ortc::kInt64, napi_bigint64_array, 8},     {"uint8", ortc::kUint8, napi_uint8_array, 1},
    {"bool", ortc::kBool, napi_uint8_array, 1},
};

void Check(Napi::Env env, const ortc::Api& api, ortc::Status* status) {
  if (status) throw Napi::Error::New(env, TakeError(api, status));
}

// The model's input or output names, in order.
ortc::Status* ReadNames(const ortc::Api& api, const ortc::Session* session, bool outputs,
                        std::vector<std::string>& names) {
  ortc::Allocator* allocator = nullptr;
  size_t count = 0;
  if (ortc::Status* status = api.GetAllocatorWithDefaultOptions(&allocator)) return status;
  if (ortc::Status* status = outputs ? api.SessionGetOutputCount(session, &count)
                                     : api.SessionGetInputCount(session, &count))
    return status;
  for (size_t i = 0; i < count; ++i) {
    char* name = nullptr;
    ortc::Status* status = outputs ? api.SessionGetOutputName(session, i, allocator, &name)
                                   : api.SessionGetInputName(session, i, allocator, &name);
    if (status) return status;
    names.emplace_back(name);
    if (ortc::Status* freed = api.AllocatorFree(allocator, name)) return freed;
  }
  return nullptr;
}

Napi::Array ToArray(Napi::Env env, const std::vector<std::string>& names) {
  Napi::Array array = Napi::Array::New(env, names.size());
  for (uint32_t i = 0; i < names.size(); ++i) array.Set(i, names[i]);
  return array;
}

void* DataOf(const Napi::TypedArray& array) {
  return static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
}

}  // namespace

class Session::RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, Session* session)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), session_(session) {
    session_->Ref();  // the session, and through it every bound array, outlives the run
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    const ortc::Api& api = session_->runtime_->api;
    if (ortc::Status* status = api.RunWithBinding(session_->session_, session_->run_options_, session_->binding_))
      SetError(TakeError(api, status));
  }
  void OnOK() override {
    Finish();
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    Finish();
    deferred_.Reject(e.Value());
  }

 private:
  void Finish() {
    session_->running_ = false;
    session_->Unref();
  }

  Napi::Promise::Deferred deferred_;
  Session* session_;
};

Napi::Function Session::Define(Napi::Env env) {
  return DefineClass(env, "NativeSession",
                     {InstanceAccessor("inputNames", &Session::InputNames, nullptr),
                      InstanceAccessor("outputNames", &Session::OutputNames, nullptr),
                      InstanceMethod("bindInput", &Session::BindInput),
                      InstanceMethod("bindOutput", &Session::BindOutput), InstanceMethod("run", &Session::Run),
                      InstanceMethod("release", &Session::Release)});
}

Session::Session(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Session>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal() || !LoadedRuntime())
    throw Napi::TypeError::New(env, "sessions are made by createSession()");
  session_ = info[0].As<Napi::External<ortc::Session>>().Data();
  runtime_ = LoadedRuntime();
  const ortc::Api& api = runtime_->api;
  ortc::Status* status = api.CreateIoBinding(session_, &binding_);
  if (!status) status = api.CreateRunOptions(&run_options_);
  if (!status) status = api.RunOptionsSetRunLogSeverityLevel(run_options_, ortc::kLogFatal);
  if (!status) status = ReadNames(api, session_, false, input_names_);
  if (!status) status = ReadNames(api, session_, true, output_names_);
  if (status) {
    Free();
    Check(env, api, status);
  }
}

Session::~Session() {
  // A run in flight holds a reference, so this only runs when none is; if the environment is torn down
  // mid-run anyway, leaking the session is safer than freeing what a worker thread still uses.
  if (!running_) Free();
}

void Session::Free() {
  if (!runtime_) return;
  const ortc::Api& api = runtime_->api;
  api.ReleaseIoBinding(binding_);
  api.ReleaseRunOptions(run_options_);
  api.ReleaseSession(session_);
  binding_ = nullptr;
  run_options_ = nullptr;
  session_ = nullptr;
  inputs_.clear();
  outputs_.clear();
}

void Session::CheckUsable(Napi::Env env, const char* what) const {
  if (!session_) throw Napi::Error::New(env, std::string("cannot ") + what + ": the session was released");
  if (running_) throw Napi::Error::New(env, std::string("cannot ") + what + ": a run is in progress on this session");
}

Napi::Value Session::InputNames(const Napi::CallbackInfo& info) { return ToArray(info.Env(), input_names_); }
Napi::Value Session::OutputNames(const Napi::CallbackInfo& info) { return ToArray(info.Env(), output_names_); }

Napi::Value Session::BindInput(const Napi::CallbackInfo& info) { return Bind(info, false); }
Napi::Value Session::BindOutput(const Napi::CallbackInfo& info) { return Bind(info, true); }

// bindInput|bindOutput(name, typedArray, dims, type): the tensor is the array's memory itself.
Napi::Value Session::Bind(const Napi::CallbackInfo& info, bool output) {
  Napi::Env env = info.Env();
  CheckUsable(env, output ? "bind an output" : "bind an input");
  if (!info[0].IsString() || !info[1].IsTypedArray() || !info[2].IsArray() || !info[3].IsString())
    throw Napi::TypeError::New(env, "bind(name: string, data: TypedArray, dims: number[], type: string)");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  // Checked here: the runtime leaves a binding unusable after it refuses an unknown name.
  const std::vector<std::string>& names = output ? output_names_ : input_names_;
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw Napi::Error::New(env, std::string("the model has no ") + (output ? "output" : "input") + " named " + name);
  const Napi::TypedArray array = info[1].As<Napi::TypedArray>();
  const std::string type = info[3].As<Napi::String>().Utf8Value();
  const ElementKind* kind = nullptr;
  for (const ElementKind& k : kKinds)
    if (type == k.name) kind = &k;
  if (!kind) throw Napi::TypeError::New(env, name + ": unknown element type " + type);
  if (array.TypedArrayType() != kind->array)
    throw Napi::TypeError::New(env, name + ": " + type + " data must be in a typed array of its own kind");
  const Napi::Array js_dims = info[2].As<Napi::Array>();
  std::vector<int64_t> dims(js_dims.Length());
  double elements = 1;
  for (uint32_t i = 0; i < js_dims.Length(); ++i) {
    const Napi::Value d = js_dims.Get(i);
    const double v = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(v >= 0) || v != std::floor(v) || v > 9007199254740991.0)
      throw Napi::RangeError::New(env, name + ": dims must be non-negative integers");
    dims[i] = static_cast<int64_t>(v);
    elements *= v;
  }
  if (elements * kind->bytes != static_cast<double>(array.ByteLength()))
    throw Napi::RangeError::New(env, name + ": dims do not match the array's length");
  const ortc::Api& api = runtime_->api;
  void* data = DataOf(array);
  ortc::Value* value = nullptr;
  Check(env, api,
        api.CreateTensorWithDataAsOrtValue(runtime_->cpu_memory, data, array.ByteLength(), dims.data(), dims.size(),
                                           kind->type, &value));
  // The binding keeps its own reference to the value, which only points at the array's memory.
  ortc::Status* status =
      output ? api.BindOutput(binding_, name.c_str(), value) : api.BindInput(binding_, name.c_str(), value);
  api.ReleaseValue(value);
  Check(env, api, status);
  (output ? outputs_ : inputs_)[name] = Bound{Napi::Persistent(array), data, array.ByteLength()};
  return env.Undefined();
}

void Session::CheckBound(Napi::Env env, const std::map<std::string, Bound>& bound) const {
  for (const auto& [name, b] : bound) {
    const Napi::TypedArray array = b.array.Value();
    if (array.ArrayBuffer().IsDetached() || DataOf(array) != b.data || array.ByteLength() != b.bytes)
      throw Napi::Error::New(env, name + ": the bound array was detached or resized; bind it again");
  }
}

// run(): Promise<void>, on a libuv worker thread; a second run before it settles is refused.
Napi::Value Session::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckUsable(env, "run");
  CheckBound(env, inputs_);
  CheckBound(env, outputs_);
  running_ = true;
  auto* worker = new RunWorker(env, this);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Session::Release(const Napi::CallbackInfo& info) {
  if (running_) throw Napi::Error::New(info.Env(), "cannot release: a run is in progress on this session");
  Free();
  return info.Env().Undefined();
}

}  // namespace native
