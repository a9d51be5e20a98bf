// The MoE layer's configuration: gate, capacity, expert shape, losses; enums with their names.
// validate() states every invariant once, with a one-line message naming the option to fix.
#pragma once

#include <cstdint>
#include <string>

namespace expar {

enum class GateKind { topk, switch_top1, gshard, noisy_topk };
enum class Activation { gelu, relu, silu, swiglu };
enum class CapacityScope { local, global };
enum class DropPolicy { position, probs };

GateKind parse_gate(const std::string& name);
Activation parse_activation(const std::string& name);
CapacityScope parse_capacity_scope(const std::string& name);
DropPolicy parse_drop_policy(const std::string& name);
const char* to_string(GateKind gate);
const char* to_string(Activation activation);
const char* to_string(CapacityScope scope);
const char* to_string(DropPolicy policy);

struct LayerConfig {
    int64_t num_experts = 8;  // E, global
    int top_k = 2;            // k
    GateKind gate = GateKind::topk;
    bool renormalize = false;       // topk: divide the kept top-k probabilities by their sum
    double capacity_factor = 1.25;  // cf; 0 = dropless
    CapacityScope capacity_scope = CapacityScope::local;
    DropPolicy drop_policy = DropPolicy::position;
    int64_t d_model = 512;  // d
    int64_t d_ff = 2048;    // f
    Activation activation = Activation::gelu;
    bool expert_bias = true;
    double aux_loss_coef = 0.01;
    double z_loss_coef = 0.001;
    double skew = 0.0;               // Zipf exponent s of a fixed router bias: bias[e] = -s * ln(e + 1)
    int64_t tokens_per_rank = 4096;  // T_local; T = P * T_local
};

// Throws an all-ranks expar::Error naming the offending option.
void validate(const LayerConfig& config, int num_ranks);

inline bool has_gate_matrix(Activation a) {
    return a == Activation::swiglu;
}

}  // namespace expar
