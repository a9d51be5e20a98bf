// The MoE layer's configuration: gate, capacity, expert shape, losses; enums with their names.
// validate() states every invariant once, with a one-line message naming the option to fix.
#pragma once

#include <cstdint>
#include <string>

#include "enum_names.h"
#include "schedule.h"

namespace expar {

enum class GateKind { topk, switch_top1, gshard, noisy_topk };
enum class Activation { gelu, relu, silu, swiglu };
enum class CapacityScope { local, global };
enum class DropPolicy { position, probs };
enum class GateTopology { none, fastermoe };

// Option names (enum_names.h): to_string, --help and option parsing read these tables.
inline const auto& enum_names(GateKind) {
    static constexpr EnumName<GateKind> names[] = {{GateKind::topk, "topk"},
                                                   {GateKind::switch_top1, "switch", "top-1"},
                                                   {GateKind::gshard, "gshard", "top-2, random 2nd"},
                                                   {GateKind::noisy_topk, "noisy-topk"}};
    return names;
}
inline const auto& enum_names(Activation) {
    static constexpr EnumName<Activation> names[] = {{Activation::gelu, "gelu"},
                                                     {Activation::relu, "relu"},
                                                     {Activation::silu, "silu"},
                                                     {Activation::swiglu, "swiglu", "3 matrices"}};
    return names;
}
inline const auto& enum_names(CapacityScope) {
    static constexpr EnumName<CapacityScope> names[] = {
        {CapacityScope::local, "local", "tokens of one source rank"},
        {CapacityScope::global, "global", "all tokens of the step"}};
    return names;
}
inline const auto& enum_names(DropPolicy) {
    static constexpr EnumName<DropPolicy> names[] = {
        {DropPolicy::position, "position", "later tokens dropped first"},
        {DropPolicy::probs, "probs", "lowest gate weight dropped first"}};
    return names;
}
inline const auto& enum_names(GateTopology) {
    static constexpr EnumName<GateTopology> names[] = {{GateTopology::none, "none"},
                                                       {GateTopology::fastermoe, "fastermoe"}};
    return names;
}

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

    // FasterMoE-era options (docs/layer.md, "Routing constraints", "Schedules", "Shadowing").
    ScheduleKind schedule = ScheduleKind::plain;
    int group_size = 4;  // pairwise: ranks per group; 0 = automatic (effective_group_size)
    GateTopology gate_topology = GateTopology::none;
    int node_limit = 0;             // DeepSeek-V3 node-limited routing: max nodes per token; 0 = off
    double router_bias_rate = 0.0;  // DeepSeek-V3 aux-loss-free balancing: bias step gamma; 0 = off
    bool shadow = false;            // FasterMoE dynamic shadowing of hot experts
    int shadow_max_experts = 2;     // shadow buffers hold this many experts' weights (memory bound)
};

inline int effective_group_size(const LayerConfig& c, int num_ranks) {
    return effective_group_size(c.group_size, num_ranks);
}

// Throws an all-ranks expar::Error naming the offending option.
void validate(const LayerConfig& config, int num_ranks);

inline bool has_gate_matrix(Activation a) {
    return a == Activation::swiglu;
}

}  // namespace expar
