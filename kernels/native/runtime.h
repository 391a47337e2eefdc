// The process-wide ONNX Runtime state of the addon: the library onnxruntime-node bundles, opened by path.
#pragma once

#include <string>

#include "ort-api.h"

namespace native {

struct Runtime {
  ortc::Api api;
  ortc::Env* env;
  ortc::MemoryInfo* cpu_memory;
  ortc::CustomOpDomain* domain;  // the batched LoRA operators
  std::string version;           // the library's own version, e.g. "1.30.0"
};

// Opens the library at `path` (never linked at build time: linking would record its exact version), asks for
// ortc::kApiVersion and registers the custom operators. Done once per process; later calls, from any thread,
// return the same state. Returns null with `error` set when the library cannot be used. The state lives as long
// as the process: sessions on every thread share it, and the runtime needs the domain to outlive them.
const Runtime* LoadRuntime(const std::string& path, std::string& error);

// The state LoadRuntime made, or null before it succeeded.
const Runtime* LoadedRuntime();

// The message of a failed call's status; releases the status.
std::string TakeError(const ortc::Api& api, ortc::Status* status);

}  // namespace native
