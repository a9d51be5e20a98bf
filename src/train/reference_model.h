// The plain-loop reference of the dense language model (model.h): the same forward and backward built
// from reference_layers.h, templated on the scalar so tests can take finite differences in double. Only
// dense models (moe_every = 0); allocates freely, speed is not its job.
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"

namespace expar {

// params: gpt_num_params(config) values in the storage order of point_params. tokens, targets [B, S];
// loss_weights [B, S] or null. Returns the loss (Σ w·loss / Σ w). When logits is not null it receives
// the [B·S, V] logits; when grads is not null it is resized to the parameter count and receives dL/dparams.
template <typename Real>
Real reference_gpt(const ModelConfig& config,
                   int64_t B,
                   const std::vector<Real>& params,
                   const int32_t* tokens,
                   const int32_t* targets,
                   const float* loss_weights,
                   std::vector<Real>* logits,
                   std::vector<Real>* grads);

}  // namespace expar
