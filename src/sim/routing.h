// Who sends what in each simulated step: the [P × E] requested count matrix from a routing distribution
// (uniform, Zipf, per-rank Dirichlet, drifting hot experts) or replayed from a trainer's HDF5 routing log,
// then the decisions of the real code: gate_forward (gate.h) for token-level constraints, and the
// layer's own plan_counts (dispatch_layout.h: capacity, shadowing, traffic). Deterministic from the seed.
// Model: docs/simulator.md.
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "dispatch_layout.h"
#include "enum_names.h"
#include "gate.h"
#include "moe_layer.h"
#include "shadow_policy.h"
#include "topology.h"
#include "workload.h"

namespace expar {

enum class RoutingKind { uniform, zipf, dirichlet, drift, replay };
// count: draw each token's k experts directly (no token-level constraint may be on);
// gate: route synthetic scores through gate_forward; automatic: gate only when the configuration needs it.
enum class RoutingPath { automatic, count, gate };

inline const auto& enum_names(RoutingKind) {
    static constexpr EnumName<RoutingKind> names[] = {
        {RoutingKind::uniform, "uniform"},
        {RoutingKind::zipf, "zipf", "expert of hotness j drawn ~ (j+1)^-s, s = --skew"},
        {RoutingKind::dirichlet, "dirichlet", "each rank its own weights ~ Dirichlet(alpha)"},
        {RoutingKind::drift, "drift", "zipf whose hottest expert moves --drift-rate experts per step"},
        {RoutingKind::replay, "replay", "--replay"}};
    return names;
}
inline const auto& enum_names(RoutingPath) {
    static constexpr EnumName<RoutingPath> names[] = {
        {RoutingPath::automatic, "auto"},
        {RoutingPath::count, "count", "draw experts per token directly"},
        {RoutingPath::gate, "gate",
         "synthetic scores through the real gate; auto picks it for --gate-topology, --node-limit, "
         "--router-bias, gshard and noisy-topk"}};
    return names;
}

struct RoutingSpec {
    RoutingKind kind = RoutingKind::uniform;
    double zipf_s = 0;             // zipf, drift: weight of the expert of hotness j is (j + 1)^-s
    double dirichlet_alpha = 1.0;  // dirichlet: each rank's weights ~ Dirichlet(alpha, ..., alpha)
    double drift_rate = 1.0;   // drift: the hottest expert at step t is floor(rate·t) mod E [experts/step]
    std::string replay;        // replay: "FILE.h5:/dataset", a [records, P_train, E_train] count array
    int64_t replay_layer = 0;  // replay of a 4-D [records, M layers, P_train, E_train] log: the layer
    int64_t sim_tokens = 0;    // tokens per rank routed, then scaled to tokens_per_rank; 0 = all
    RoutingPath path = RoutingPath::automatic;
    uint64_t seed = 1;
};

// One simulated step's decisions, as the timing engine consumes them: the layer's count decisions
// (DispatchCounts, made by the same plan_counts) plus what the simulator reports. Sized once by
// RoutingModel; step() overwrites.
struct RoutingStep : DispatchCounts {
    int64_t step = 0;
    int64_t tokens_per_rank = 0;
    std::vector<int64_t> redirected;  // [P] assignments the topology gate moved on-node, per source rank
    int64_t num_requested = 0, num_allowed = 0, num_redirected = 0;  // totals over ranks

    int64_t num_dropped() const { return num_requested - num_allowed; }
    // Tokens `rank` computes itself with its shadow copy of `expert` (0 unless the expert is shadowed).
    int64_t shadow_tokens(int rank, int64_t expert) const {
        return shadowed[expert] ? allowed[rank * num_experts + expert] : 0;
    }
};

// ---------------------------------------------------------------------------------------------------
// Replay of a trainer's routing log.

// A [records, P_train, E_train] array of routed-assignment counts (any numeric HDF5 type).
struct RoutingLog {
    std::string origin;  // "FILE.h5:/dataset"
    int64_t num_records = 0, num_ranks = 0, num_experts = 0;
    std::vector<double> counts;  // [records, P_train, E_train]
};

// The FILE of "FILE.h5:/dataset" (the text before the last ":/"; all of it when there is none, which
// read_routing_log refuses), for a command to keep its outputs off the file it will read.
std::string replay_file(const std::string& file_and_dataset);

// Reads "FILE.h5:/dataset": [records, P_train, E_train], or the trainer's /routing/counts
// [records, M layers, P_train, E_train] of which it keeps MoE layer `layer` (train_io.cpp). Throws an
// all-ranks expar::Error naming --replay on a missing file or dataset, a shape that is not 3-D or 4-D,
// a layer out of range (or not 0 for 3-D), negative or non-finite counts, or a training rank with no tokens.
RoutingLog read_routing_log(const std::string& file_and_dataset, int64_t layer = 0);

// The log's expert-load fractions for simulated rank `rank` of `num_ranks`, over `num_experts`
// simulated experts (fractions[E], summing to 1) at record `record`. Ranks: simulated rank r takes the
// sum of the training ranks q with q mod P == r when P < P_train (merge), else training rank r mod P_train
// (tile). Experts: equal E: identity; E = m·E_train: trained expert e's share is split evenly over
// simulated experts e·m .. e·m + m − 1; E_train = m·E: simulated expert j sums trained experts
// j·m .. j·m + m − 1; any other E is an error.
void replay_fractions(
    double* fractions, const RoutingLog& log, int64_t record, int rank, int num_ranks, int64_t num_experts);

// ---------------------------------------------------------------------------------------------------

// The shadowing cost model of a simulated layer, as the MoE layer builds it from its topology: one
// expert's forward FLOPs, a token row and an expert's weights in dtype bytes, the device rate, and the
// network bandwidth of the slowest link class in use (inter-node if there are several nodes).
ShadowCostModel shadow_cost_model(const Workload& workload, const LayerCluster& cluster);

// The simulated cluster of the decisions: the timing engine's placement (sim_node_map: nodes of
// topology.devices_per_node consecutive ranks, or one node when fewer), the topology's per-device
// bandwidths and its dense rate at `precision`.
LayerCluster routing_cluster(const Topology& topology, int num_ranks, const std::string& precision);

class RoutingModel {
   public:
    // config: E, k, T (tokens_per_rank), gate, capacity and routing-constraint options, validated for
    // cluster.nodes.num_ranks ranks. shadow_model is used when config.shadow. Reads the replay log here.
    RoutingModel(const RoutingSpec& spec,
                 const LayerConfig& config,
                 const LayerCluster& cluster,
                 const ShadowCostModel& shadow_model);
    ~RoutingModel();
    RoutingModel(const RoutingModel&) = delete;
    RoutingModel& operator=(const RoutingModel&) = delete;

    // Step `step`'s requested counts and decisions. Same (spec, config, step sequence) → same bits.
    // The router bias (if on) moves after each call, so steps must be taken in order, as in training.
    void step(int64_t step, RoutingStep* out);
    RoutingStep make_step() const;  // sized for this model

    // The top-1 choice distribution of `rank` at `step`: weights[E] (unnormalised, all > 0).
    void expert_weights(int64_t step, int rank, double* weights);
    bool uses_gate() const { return use_gate_; }
    int64_t sample_tokens() const { return sample_tokens_; }
    int64_t max_offnode_per_sample() const { return max_offnode_; }
    const std::vector<float>& selection_bias() const { return selection_bias_; }
    const RoutingSpec& spec() const { return spec_; }

   private:
    void sample_count_path(int64_t step, int rank, const double* weights, int64_t* counts);
    void sample_gate_path(
        int64_t step, int rank, const double* weights, int64_t* counts, int64_t* redirected);
    void scale_to_tokens(int64_t* requested_row, const int64_t* sample_counts);
    void dirichlet_weights(int rank, double* weights);
    void decide(RoutingStep* out);

    RoutingSpec spec_;
    LayerConfig config_;
    LayerCluster cluster_;
    int num_ranks_;
    int64_t num_experts_, sample_tokens_;
    bool use_gate_ = false;
    int64_t max_offnode_ = -1;  // topology gate limit for sample_tokens_ tokens
    std::unique_ptr<RoutingLog> log_;
    std::unique_ptr<ShadowPolicy> shadow_policy_;
    std::vector<float> selection_bias_;    // [E] DeepSeek-V3 bias, moved after each step
    std::vector<int64_t> expert_load_;     // [E]
    std::vector<double> weights_;          // [E]
    std::vector<double> alias_prob_;       // [E] Vose alias table of the weights
    std::vector<int64_t> alias_other_;     // [E]
    std::vector<int64_t> alias_work_;      // [2E]
    std::vector<double> scale_weights_;    // [E] scratch of scale_to_tokens
    std::vector<int64_t> sample_counts_;   // [E]
    std::vector<int64_t> chosen_;          // [k]
    std::vector<double> dirichlet_cache_;  // [P, E] when small enough, else empty
    // Gate path, sized for sample_tokens_ tokens: scores x [S, E], identity router [E, E], zero bias.
    LayerConfig gate_config_;
    std::vector<float> x_, router_w_, router_noise_w_, zero_bias_;
    std::vector<float> logits_, probs_, lse_, noise_logits_, scores_, weight_, selection_, node_scratch_;
    std::vector<int32_t> expert_, node_of_expert_;
    std::vector<uint8_t> routed_;
    std::vector<int64_t> order_;
    std::vector<double> prob_sum_;
};

// ---------------------------------------------------------------------------------------------------
// Options: --routing, --dirichlet-alpha, --drift-rate, --replay, --sim-tokens, --routing-path. The Zipf
// exponent is the layer's --skew, and the seed the command's --seed.

struct RoutingOptions {
    RoutingKind routing = RoutingKind::uniform;
    double dirichlet_alpha = 1.0;
    double drift_rate = 1.0;
    std::string replay;
    int64_t replay_layer = 0;
    int64_t sim_tokens = 0;
    RoutingPath path = RoutingPath::automatic;
};

boost::program_options::options_description routing_options_description(RoutingOptions* out);

// Throws an all-ranks expar::Error naming the option at fault.
RoutingSpec make_routing_spec(const RoutingOptions& options, double skew, uint64_t seed);

}  // namespace expar
