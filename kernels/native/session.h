// A session of the addon: inputs and outputs bound to JS typed arrays in place (no copies), runs on a libuv
// worker thread so the JS thread stays free, one run at a time.
#pragma once

#include <napi.h>

#include <map>
#include <string>
#include <vector>

#include "runtime.h"

namespace native {

class Session : public Napi::ObjectWrap<Session> {
 public:
  static Napi::Function Define(Napi::Env env);
  // createSession(modelPath, intraOpThreads): Promise<Session>; the model is loaded off the JS thread.
  static Napi::Value Create(const Napi::CallbackInfo& info);

  explicit Session(const Napi::CallbackInfo& info);
  ~Session() override;

 private:
  class RunWorker;

  // The memory of a bound typed array, as it was when bound: a run checks it has not been detached or moved.
  struct Bound {
    Napi::Reference<Napi::TypedArray> array;
    void* data;
    size_t bytes;
  };

  Napi::Value InputNames(const Napi::CallbackInfo& info);
  Napi::Value OutputNames(const Napi::CallbackInfo& info);
  Napi::Value BindInput(const Napi::CallbackInfo& info);
  Napi::Value BindOutput(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Bind(const Napi::CallbackInfo& info, bool output);
  void CheckUsable(Napi::Env env, const char* what) const;
  void CheckBound(Napi::Env env, const std::map<std::string, Bound>& bound) const;
  void Free();

  const Runtime* runtime_ = nullptr;
  ortc::Session* session_ = nullptr;
  ortc::IoBinding* binding_ = nullptr;
  ortc::RunOptions* run_options_ = nullptr;
  std::vector<std::string> input_names_;
  std::vector<std::string> output_names_;
  // References keep bound arrays alive (uncollectable) for as long as they are bound.
  std::map<std::string, Bound> inputs_;
  std::map<std::string, Bound> outputs_;
  bool running_ = false;
};

}  // namespace native
