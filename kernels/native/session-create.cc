// createSession(modelPath, intraOpThreads): Promise<NativeSession>, the model loaded on a libuv worker thread.
#include <utility>

#include "session.h"

namespace native {
namespace {

class CreateWorker : public Napi::AsyncWorker {
 public:
  CreateWorker(Napi::Env env, const Runtime* runtime, std::string path, int threads)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        runtime_(runtime),
        path_(std::move(path)),
        threads_(threads) {}
  ~CreateWorker() override { runtime_->api.ReleaseSession(session_); }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    const ortc::Api& api = runtime_->api;
    ortc::SessionOptions* options = nullptr;
    ortc::Status* status = api.CreateSessionOptions(&options);
    if (!status) status = api.SetIntraOpNumThreads(options, threads_);
    if (!status) status = api.SetInterOpNumThreads(options, 1);
    if (!status) status = api.SetSessionExecutionMode(options, ortc::kSequential);
    if (!status) status = api.SetSessionGraphOptimizationLevel(options, ortc::kOptAll);
    // Failures come back to JS as errors; the runtime's own logging of them would only duplicate them.
    if (!status) status = api.SetSessionLogSeverityLevel(options, ortc::kLogFatal);
    if (!status) status = api.AddCustomOpDomain(options, runtime_->domain);
    if (!status) status = api.CreateSession(runtime_->env, path_.c_str(), options, &session_);
    api.ReleaseSessionOptions(options);
    if (status) SetError(TakeError(api, status));
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      ortc::Session* session = std::exchange(session_, nullptr);  // the Session object owns it from here
      Napi::Object object =
          env.GetInstanceData<Napi::FunctionReference>()->New({Napi::External<ortc::Session>::New(env, session)});
      deferred_.Resolve(object);
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  const Runtime* runtime_;
  std::string path_;
  int threads_;
  ortc::Session* session_ = nullptr;
};

}  // namespace

Napi::Value Session::Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Runtime* runtime = LoadedRuntime();
  if (!runtime) throw Napi::Error::New(env, "the ONNX Runtime library is not loaded");
  if (!info[0].IsString() || !info[1].IsNumber())
    throw Napi::TypeError::New(env, "createSession(modelPath: string, intraOpThreads: number)");
  const int threads = info[1].As<Napi::Number>().Int32Value();
  if (threads < 0) throw Napi::RangeError::New(env, "intraOpThreads must be 0 (runtime default) or more");
  auto* worker = new CreateWorker(env, runtime, info[0].As<Napi::String>().Utf8Value(), threads);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace native
