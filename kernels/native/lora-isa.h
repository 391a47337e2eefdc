// Which implementation of the batched LoRA kernel runs: the best one the CPU supports, unless one is forced.
#pragma once

#include <string>
#include <vector>

#include "lora-kernel.h"

namespace lora {

// The implementations this CPU can run, best first.
std::vector<const Isa*> SupportedIsas();

// The forced implementation if any, else the best supported one.
const Isa& ActiveIsa();

// Forces an implementation by name ("avx512", "avx2", "portable"), or "auto" for the best supported.
// Returns false, changing nothing, when the name is unknown or the CPU cannot run it.
bool ForceIsa(const std::string& name);

}  // namespace lora
