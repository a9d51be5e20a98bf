// FasterMoE dynamic shadowing (PPoPP'22 §4.1, Algorithm 1): which hot experts to replicate this step.
// Every rank evaluates the same global token matrix with the paper's cost model, so every rank reaches
// the same decision without extra communication. Allocates only at construction.
#pragma once

#include <cstdint>
#include <vector>

namespace expar {

struct ShadowCostModel {
    double expert_flops_per_token = 0;  // forward FLOPs of one expert on one token [FLOP]; backward = 2x
    double bytes_per_token = 0;         // one token row on the wire [bytes]
    double bytes_per_expert = 0;     // one expert's parameters [bytes]: broadcast forward, reduced backward
    double device_flops_per_s = 0;   // expert compute rate of one rank [FLOP/s]
    double network_bytes_per_s = 0;  // W_net, per-rank network bandwidth, one direction [bytes/s]
    // One expert's broadcast (or reduce) takes collective_factor · bytes_per_expert / W_net: 1 in the
    // paper's eq. 8 (an ideal pipelined broadcast); pipelined_tree_factor() for the trees MPI and the
    // simulator use, where every inner rank sends twice and the pipeline has to fill.
    double collective_factor = 1.0;
};

// The pipelined binary tree of a large broadcast or reduce: `bytes` in shadow_tree_segments(bytes)
// segments (at least 1 MiB each, at most 16) down a tree of `num_ranks` ranks, children 2v+1 and 2v+2.
int shadow_tree_segments(double bytes);
int shadow_tree_depth(int num_ranks);  // edges from the root to the deepest rank
// Its time in units of bytes / bandwidth, latency aside: fan-out · (segments + depth − 1) / segments
// (each segment crosses each level once; an inner rank's two children share its link: fan-out 2, 1 on 2
// ranks).
double pipelined_tree_factor(int num_ranks, double bytes);

// Owner of expert e is rank e / (E / P). tokens[src * E + e] = tokens rank src sends to expert e.
class ShadowPolicy {
   public:
    ShadowPolicy(int num_ranks, int64_t num_experts, const ShadowCostModel& model);

    // Predicted latency of one layer step (forward + backward) [s], FasterMoE eqs. 7-8 generalised:
    //   max over ranks w of (3·flops·B_w / rate + 4·bytes·N_w / W_net)  +  2·r·c·param_bytes / W_net
    // with B_w the tokens w computes, N_w = max(tokens w sends, tokens w receives) off-rank, and r the
    // number of shadowed experts (one broadcast and one reduce each), c = collective_factor.
    double predicted_latency_s(const int64_t* tokens, const uint8_t* shadowed);

    // Algorithm 1: visit experts hottest first (ties: lower index); shadow each one while that lowers
    // the predicted latency, stop at the first that does not, or after max_shadowed.
    // Writes shadowed[E] (0/1) and returns how many were chosen.
    int select(uint8_t* shadowed, const int64_t* tokens, int max_shadowed);

   private:
    void load_without_shadows(const int64_t* tokens);
    void move_to_senders(const int64_t* tokens, int64_t e);  // shadow e: its senders compute their tokens
    double latency_s(int num_shadowed) const;

    int num_ranks_;
    int64_t num_experts_;
    ShadowCostModel model_;
    std::vector<int64_t> compute_, send_, recv_;  // [P] tokens computed / sent off-rank / received
    std::vector<int64_t> expert_load_;            // [E]
    std::vector<int64_t> order_;                  // [E] hottest first
};

}  // namespace expar
