// Published MoE models as presets for the simulator: Switch, GShard, Mixtral, DBRX, Arctic, DeepSeek,
// Qwen2, OLMoE, Grok-1. Each figure carries its primary source in presets.cpp (the model's released
// config file or paper); figures that could not be confirmed against a primary source are marked "(?)".
#pragma once

#include <string>
#include <vector>

#include "workload.h"

namespace expar {

// Names accepted by --model, in the order of the table in presets.cpp.
std::vector<std::string> preset_names();

// The preset's model. Throws an all-ranks expar::Error "unknown --model 'x' (known: ...)".
ModelSpec model_preset(const std::string& name);

}  // namespace expar
