// Test harness: runs the distributed MoeLayer on a communicator with parameters and data taken from
// the reference layer's generators, and gathers everything to the communicator's rank 0 in global order.
#pragma once

#include <mpi.h>

#include <vector>

#include "comm.h"
#include "config.h"
#include "moe_layer.h"
#include "reference_layer.h"

namespace expar::test {

struct GlobalResult {                          // valid on the communicator's rank 0
    std::vector<float> y, dx;                  // [T, d]
    std::vector<int32_t> expert;               // [T, k] (-1 where not kept)
    std::vector<float> weight;                 // [T, k]
    ReferenceParams<float> grad;               // all experts, global order
    std::vector<int64_t> requested, received;  // [E]
    double aux = 0, z = 0;
    int64_t num_redirected = 0;  // topology gate, all ranks
    int num_shadowed = 0;
};

// Global x, dy [T, d] with T = num_ranks_any · tokens_per_rank: the same for every rank count.
void make_global_inputs(const LayerConfig& global_config,
                        int64_t global_tokens,
                        uint64_t seed,
                        int64_t step,
                        std::vector<float>* x,
                        std::vector<float>* dy);

// Copies this rank's slice of global parameters into the layer.
void load_params(MoeLayer& layer, const ReferenceParams<float>& params);

// Runs one forward + backward (+ router-gradient allreduce) and gathers the result to rank 0 of comm.
// config.tokens_per_rank must be global_tokens / comm size.
// cluster: node map and rates (null = one node); selection_bias [E]: the router bias to start from.
GlobalResult run_distributed(const LayerConfig& config,
                             MPI_Comm comm,
                             uint64_t seed,
                             int64_t step,
                             ExpertCompute* experts = nullptr,
                             const LayerCluster* cluster = nullptr,
                             const float* selection_bias = nullptr);

// Every parameter gradient of a result, concatenated (for bitwise comparisons).
std::vector<float> all_grads(const GlobalResult& result);

// Relative error ‖a − b‖ / ‖b‖ (b is the reference; 0 if both are zero).
double relative_error(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace expar::test
