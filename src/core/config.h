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
enum class ScheduleKind { plain, pairwise, hierarchical };
enum class GateTopology { none, fastermoe };

GateKind parse_gate(const std::string& name);
Activation parse_activation(const std::string& name);
CapacityScope parse_capacity_scope(const std::string& name);
DropPolicy parse_drop_policy(const std::string& name);
ScheduleKind parse_schedule(const std::string& name);
GateTopology parse_gate_topology(const std::string& name);
const char* to_string(GateKind gate);
const char* to_string(Activation activation);
const char* to_string(CapacityScope scope);
const char* to_string(DropPolicy policy);
const char* to_string(ScheduleKind kind);
const char* to_string(GateTopology kind);

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
    int group_size = 4;  // pairwise: ranks per group; clipped to P, then must divide P
    GateTopology gate_topology = GateTopology::none;
    int node_limit = 0;             // DeepSeek-V3 node-limited routing: max nodes per token; 0 = off
    double router_bias_rate = 0.0;  // DeepSeek-V3 aux-loss-free balancing: bias step gamma; 0 = off
    bool shadow = false;            // FasterMoE dynamic shadowing of hot experts
    int shadow_max_experts = 2;     // shadow buffers hold this many experts' weights (memory bound)
};

// The pairwise group size actually used: --group-size clipped to the rank count.
inline int effective_group_size(const LayerConfig& c, int num_ranks) {
    return c.group_size < num_ranks ? c.group_size : num_ranks;
}

// Throws an all-ranks expar::Error naming the offending option.
void validate(const LayerConfig& config, int num_ranks);

inline bool has_gate_matrix(Activation a) {
    return a == Activation::swiglu;
}

}  // namespace expar
