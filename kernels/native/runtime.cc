#include "runtime.h"

#include <dlfcn.h>

#include <mutex>

#include "lora-op.h"

namespace native {
namespace {

std::mutex g_mutex;
const Runtime* g_runtime = nullptr;
std::string g_path;

const Runtime* Open(const std::string& path, std::string& error) {
  // RTLD_LOCAL: the symbols stay private; if onnxruntime-node already loaded this file, this is the same copy.
  void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* reason = dlerror();
    error = std::string("cannot open the ONNX Runtime library: ") + (reason ? reason : "unknown error");
    return nullptr;
  }
  auto get_base = reinterpret_cast<ortc::GetApiBaseFn>(dlsym(library, ortc::kGetApiBaseSymbol));
  const ortc::ApiBase* base = get_base ? get_base() : nullptr;
  if (!base) {
    error = "the ONNX Runtime library has no OrtGetApiBase";
    return nullptr;
  }
  const char* version = base->GetVersionString();
  const ortc::ApiTable* table = base->GetApi(ortc::kApiVersion);
  if (!table) {
    error = "ONNX Runtime " + std::string(version ? version : "?") + " does not serve C API version " +
            std::to_string(ortc::kApiVersion) + " (ONNX Runtime 1." + std::to_string(ortc::kApiVersion) +
            " or newer is needed)";
    return nullptr;
  }
  const ortc::Api api(table);
  ortc::Env* env = nullptr;
  ortc::MemoryInfo* cpu = nullptr;
  ortc::CustomOpDomain* domain = nullptr;
  // One environment per process: if onnxruntime-node made one already, the runtime hands back that one.
  auto ok = [&](ortc::Status* status, const char* what) {
    if (status) error = std::string(what) + ": " + TakeError(api, status);
    return !status;
  };
  if (!ok(api.CreateEnv(ortc::kLogWarning, "loraserve", &env), "CreateEnv") ||
      !ok(api.CreateCpuMemoryInfo(ortc::kDeviceAllocator, ortc::kMemTypeDefault, &cpu), "CreateCpuMemoryInfo") ||
      !ok(api.CreateCustomOpDomain(lora::kOpDomain, &domain), "CreateCustomOpDomain") ||
      !ok(api.CustomOpDomain_Add(domain, &lora::BatchedLoraOp()), "CustomOpDomain_Add")) {
    api.ReleaseCustomOpDomain(domain);
    api.ReleaseMemoryInfo(cpu);
    api.ReleaseEnv(env);
    return nullptr;
  }
  return new Runtime{api, env, cpu, domain, version ? version : ""};
}

}  // namespace

const Runtime* LoadRuntime(const std::string& path, std::string& error) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_runtime) {
    if (path != g_path) error = "the ONNX Runtime library is already loaded from another path";
    return path == g_path ? g_runtime : nullptr;
  }
  g_runtime = Open(path, error);
  if (g_runtime) g_path = path;
  return g_runtime;
}

std::string TakeError(const ortc::Api& api, ortc::Status* status) {
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  return message;
}

const Runtime* LoadedRuntime() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_runtime;
}

}  // namespace native
