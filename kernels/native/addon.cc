// The loraserve_native addon: ONNX Runtime sessions with the batched LoRA operators, driven from JS.
//
//   load(libraryPath) -> { ortVersion, apiVersion, opDomain }   throws when the library cannot be used
//   createSession(modelPath, intraOpThreads) -> Promise<NativeSession>
//   loraIsas() -> { supported: string[], active: string }
//   setLoraIsa(name) -> void                                    "auto" or a supported name; throws otherwise
#include <napi.h>

#include "lora-isa.h"
#include "lora-op.h"
#include "runtime.h"
#include "session.h"

namespace native {
namespace {

Napi::Value Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "load(libraryPath: string)");
  std::string error;
  const Runtime* runtime = LoadRuntime(info[0].As<Napi::String>().Utf8Value(), error);
  if (!runtime) throw Napi::Error::New(env, error);
  Napi::Object result = Napi::Object::New(env);
  result.Set("ortVersion", runtime->version);
  result.Set("apiVersion", ortc::kApiVersion);
  result.Set("opDomain", lora::kOpDomain);
  return result;
}

Napi::Value LoraIsas(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<const lora::Isa*> isas = lora::SupportedIsas();
  Napi::Array supported = Napi::Array::New(env, isas.size());
  for (uint32_t i = 0; i < isas.size(); ++i) supported.Set(i, isas[i]->name);
  Napi::Object result = Napi::Object::New(env);
  result.Set("supported", supported);
  result.Set("active", lora::ActiveIsa().name);
  return result;
}

Napi::Value SetLoraIsa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "setLoraIsa(name: string)");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  if (!lora::ForceIsa(name)) throw Napi::Error::New(env, "this CPU cannot run the LoRA kernel path " + name);
  return env.Undefined();
}

Napi::Object Exports(Napi::Env env, Napi::Object exports) {
  Napi::Function session = Session::Define(env);
  // Per environment (main thread or worker): createSession constructs sessions through it.
  env.SetInstanceData(new Napi::FunctionReference(Napi::Persistent(session)));
  exports.Set("load", Napi::Function::New(env, Load));
  exports.Set("createSession", Napi::Function::New(env, Session::Create));
  exports.Set("loraIsas", Napi::Function::New(env, LoraIsas));
  exports.Set("setLoraIsa", Napi::Function::New(env, SetLoraIsa));
  return exports;
}

}  // namespace
}  // namespace native

// The module macro pastes this name into an identifier, so it must be unqualified.
static Napi::Object Init(Napi::Env env, Napi::Object exports) { return native::Exports(env, exports); }
NODE_API_MODULE(loraserve_native, Init)
