#include "moe_layer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include "capacity.h"
#include "check.h"
#include "rng.h"
#include "synthetic.h"

namespace expar {

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Order of the probs drop policy: larger weight first, then lower global slot (= lower token index).
struct KeyBefore {
    template <typename K>
    bool operator()(const K& a, const K& b) const {
        if (a.weight != b.weight) return a.weight > b.weight;
        return a.global_slot < b.global_slot;
    }
};

}  // namespace

const char* phase_name(Phase phase) {
    static const char* names[kNumPhases] = {"forward/route",    "forward/count_exchange", "forward/layout",
                                            "forward/dispatch", "forward/expert",         "forward/combine",
                                            "backward/combine", "backward/expert",        "backward/dispatch",
                                            "backward/route"};
    return names[phase];
}

int64_t moe_max_recv_rows(const LayerConfig& config, int num_ranks) {
    const int64_t P = num_ranks, T = config.tokens_per_rank, k = config.top_k, E = config.num_experts;
    const int64_t all_rows = P * T * k;
    if (config.capacity_factor <= 0) return all_rows;
    const bool local = config.capacity_scope == CapacityScope::local;
    const int64_t capacity = capacity_per_expert(config.capacity_factor, local ? T : P * T, config.top_k, E);
    return std::min(all_rows, (E / P) * (local ? P : 1) * capacity);
}

LayerCluster cluster_with_topology_rates(NodeMap nodes,
                                         const Topology& topology,
                                         const std::string& precision) {
    LayerCluster cluster{std::move(nodes)};
    cluster.local_GBps = topology.local_GBps_per_device();
    cluster.net_GBps = topology.net_GBps_per_device();
    cluster.device_gflops = topology.device_flops_per_s(precision) / 1e9;
    return cluster;
}

ShadowCostModel shadow_cost_model(double expert_flops_per_token,
                                  double bytes_per_token,
                                  double bytes_per_expert,
                                  const LayerCluster& cluster) {
    ShadowCostModel model;
    model.expert_flops_per_token = expert_flops_per_token;
    model.bytes_per_token = bytes_per_token;
    model.bytes_per_expert = bytes_per_expert;
    model.device_flops_per_s = cluster.device_gflops * 1e9;
    const bool multi_node = cluster.nodes.num_nodes > 1;
    model.network_bytes_per_s = (multi_node ? cluster.net_GBps : cluster.local_GBps) * 1e9;
    // Shadowed weights go out and their gradients come back by MPI's large-message broadcast and reduce,
    // which the simulator times as pipelined binary trees: price them so.
    model.collective_factor = pipelined_tree_factor(cluster.nodes.num_ranks, bytes_per_expert);
    return model;
}

int64_t topology_gate_max_offnode(const LayerConfig& config, const LayerCluster& cluster) {
    EXPAR_REQUIRE(
        cluster.net_GBps > 0 && cluster.local_GBps > 0,
        "--gate-topology fastermoe needs the link bandwidths of a topology file: give --topology FILE");
    const double fraction = cluster.net_GBps / (cluster.nodes.ranks_per_node * cluster.local_GBps);
    return static_cast<int64_t>(
        std::floor(fraction * static_cast<double>(config.tokens_per_rank * config.top_k) + 1e-9));
}

MoeLayer::MoeLayer(const LayerConfig& config,
                   Comm& comm,
                   ExpertCompute& experts,
                   int layer_index,
                   const LayerCluster* cluster)
    : config_(config), comm_(comm), experts_(experts), layer_index_(layer_index) {
    validate(config_, comm_.size());
    const int64_t P = comm_.size(), E = config_.num_experts, d = config_.d_model, f = config_.d_ff;
    const int64_t T = config_.tokens_per_rank, k = config_.top_k;
    num_local_experts_ = E / P;
    const int64_t EL = num_local_experts_;
    const bool noisy = config_.gate == GateKind::noisy_topk;
    const bool swiglu = config_.activation == Activation::swiglu;
    const bool bias = config_.expert_bias;

    cluster_ = cluster ? *cluster : LayerCluster{node_map_blocks(static_cast<int>(P), static_cast<int>(P))};
    EXPAR_REQUIRE(cluster_.nodes.num_ranks == P,
                  "the node map has " << cluster_.nodes.num_ranks << " ranks but the communicator " << P);
    node_of_expert_.resize(E);
    for (int64_t e = 0; e < E; ++e) node_of_expert_[e] = cluster_.nodes.node_of_rank[e / EL];
    if (config_.gate_topology == GateTopology::fastermoe)
        max_offnode_ = topology_gate_max_offnode(config_, cluster_);
    if (config_.node_limit > 0)
        EXPAR_REQUIRE(config_.node_limit * cluster_.nodes.ranks_per_node * EL >= k,
                      "--node-limit " << config_.node_limit << " leaves "
                                      << config_.node_limit * cluster_.nodes.ranks_per_node * EL
                                      << " experts per token, fewer than --top-k " << k);
    selection_bias_.assign(E, 0.0f);

    // Parameters: a size table, one allocation, named views (llm.c style).
    const int64_t sizes[7] = {d * E,
                              noisy ? d * E : 0,
                              EL * d * f,
                              bias ? EL * f : 0,
                              EL * f * d,
                              bias ? EL * d : 0,
                              swiglu ? EL * d * f : 0};
    num_param_floats_ = 0;
    for (int64_t size : sizes) num_param_floats_ += size;
    param_memory_.assign(num_param_floats_, 0.0f);
    grad_memory_.assign(num_param_floats_, 0.0f);
    auto point = [&](std::vector<float>& memory) {
        float* cursor = memory.data();
        float* views[7];
        for (int i = 0; i < 7; ++i) {
            views[i] = sizes[i] > 0 ? cursor : nullptr;
            cursor += sizes[i];
        }
        return LayerTensors{views[0], views[1], views[2], views[3], views[4], views[5], views[6]};
    };
    params_ = point(param_memory_);
    grads_ = point(grad_memory_);
    router_bias_.resize(E);
    for (int64_t e = 0; e < E; ++e)
        router_bias_[e] = static_cast<float>(-config_.skew * std::log(static_cast<double>(e + 1)));

    // Gate buffers.
    logits_.resize(T * E);
    probs_.resize(T * E);
    lse_.resize(T);
    noise_logits_.resize(noisy ? T * E : 0);
    scores_.resize(noisy ? T * E : 0);
    dlogits_.resize(T * E);
    dnoise_.resize(T * E);
    slot_expert_.resize(T * k);
    slot_weight_.resize(T * k);
    dslot_weight_.resize(T * k);
    slot_routed_.resize(T * k);
    selection_.resize(T * E);
    gate_order_.resize(T * k);
    node_scratch_.resize(cluster_.nodes.num_nodes + E);
    gate_ = GateState{logits_.data(),    probs_.data(),       lse_.data(),         noise_logits_.data(),
                      scores_.data(),    slot_expert_.data(), slot_weight_.data(), slot_routed_.data(),
                      selection_.data(), gate_order_.data(),  node_scratch_.data()};
    prob_sum_.resize(E);
    aux_dprob_.resize(E);
    local_requested_.resize(E);
    expert_load_.resize(E);
    count_send_.resize(E + 3);
    count_recv_.resize(P * (E + 3));
    sum_send_.resize(E + 1);
    sum_recv_.resize(P * (E + 1));

    // Layout.
    handle_.requested.resize(P * E);
    handle_.allowed.resize(P * E);
    handle_.sent.resize(P * E);
    handle_.shadowed.assign(E, 0);
    handle_.rows.resize(P * P);
    handle_.kept.resize(T * k);
    handle_.send_slot.resize(T * k);
    handle_.send_rows.resize(P);
    handle_.send_offsets.resize(P);
    handle_.recv_rows.resize(P);
    handle_.recv_offsets.resize(P);
    by_expert_.resize(T * k);
    expert_begin_.resize(E + 1);
    expert_fill_.resize(E);
    expert_row_begin_.resize(EL + 1);
    block_begin_.resize(EL * P);
    source_block_row_.resize(P * EL);
    slot_row_.resize(T * k);
    // (probs, global) needs the key exchange whenever cf > 0: sized by scope and policy alone, so that
    // set_capacity_factor can switch between dropless and a capacity without allocating.
    if (config_.capacity_scope == CapacityScope::global && config_.drop_policy == DropPolicy::probs) {
        key_send_.resize(T * k);
        key_recv_.resize(P * T * k);
        key_scratch_.resize(P * T * k);
        key_send_rows_.resize(P);
        key_send_offsets_.resize(P);
        key_recv_rows_.resize(P);
        key_recv_offsets_.resize(P);
        allowed_block_.resize(EL * P);
        allowed_blocks_.resize(P * EL * P);
    }

    // Rows an owner can receive: every kept assignment of the step in the worst case, and no more than
    // its experts' capacity allows. Sized once here; the step never allocates.
    max_recv_rows_ = moe_max_recv_rows(config_, static_cast<int>(P));
    send_buf_.resize(T * k * d);
    combine_recv_.resize(T * k * d);
    return_buf_.resize(T * k * d);
    recv_buf_.resize(max_recv_rows_ * d);
    expert_x_.resize(max_recv_rows_ * d);
    expert_dy_.resize(max_recv_rows_ * d);
    act_h_.resize(max_recv_rows_ * f);
    act_g_.resize(swiglu ? max_recv_rows_ * f : 0);
    act_a_.resize(max_recv_rows_ * f);
    act_dh_.resize(max_recv_rows_ * f);
    const int64_t max_rows = std::max(T * k, max_recv_rows_);
    exchange_ = std::make_unique<TokenExchange>(config_.schedule, comm_, cluster_.nodes,
                                                effective_group_size(config_, static_cast<int>(P)), max_rows,
                                                max_rows, d);
    const size_t num_stages = exchange_->stages().size();
    stage_first_.resize(num_stages);
    stage_count_.resize(num_stages);

    // Shadowing: the policy's cost model, and room for shadow_max_experts replicated experts.
    expert_floats_ = (sizes[2] + sizes[3] + sizes[4] + sizes[5] + sizes[6]) / EL;
    if (config_.shadow) {
        EXPAR_REQUIRE(
            cluster_.device_gflops > 0 && (cluster_.net_GBps > 0 || cluster_.local_GBps > 0),
            "--shadow needs the compute rate and link bandwidths of a topology file: give --topology FILE");
        const ShadowCostModel model =
            shadow_cost_model(expert_ffn_forward_flops(1, ExpertShape{d, f, config_.activation}),
                              static_cast<double>(d * sizeof(float)),
                              static_cast<double>(expert_floats_ * sizeof(float)), cluster_);
        shadow_policy_ = std::make_unique<ShadowPolicy>(static_cast<int>(P), E, model);
        const int64_t slots = std::min<int64_t>(config_.shadow_max_experts, E);
        shadow_params_.resize(slots * expert_floats_);
        shadow_grads_.resize(slots * expert_floats_);
        shadow_expert_.resize(slots);
        shadow_row_begin_.resize(slots + 1);
        shadow_x_.resize(T * k * d);
        shadow_h_.resize(T * k * f);
        shadow_g_.resize(swiglu ? T * k * f : 0);
        shadow_a_.resize(T * k * f);
        shadow_dh_.resize(T * k * f);
    }
    // Touch every page now: fresh pages fault on first write, which would land in the first steps.
    for (auto* buffer : {&send_buf_, &combine_recv_, &return_buf_, &recv_buf_, &expert_x_, &expert_dy_,
                         &act_h_, &act_g_, &act_a_, &act_dh_, &shadow_params_, &shadow_grads_, &shadow_x_,
                         &shadow_h_, &shadow_g_, &shadow_a_, &shadow_dh_})
        std::fill(buffer->begin(), buffer->end(), 0.0f);
}

MoeLayer::~MoeLayer() = default;

void MoeLayer::set_capacity_factor(double capacity_factor) {
    LayerConfig next = config_;
    next.capacity_factor = capacity_factor;
    validate(next, num_ranks());
    EXPAR_REQUIRE(moe_max_recv_rows(next, num_ranks()) <= max_recv_rows_,
                  "capacity factor " << capacity_factor << " needs " << moe_max_recv_rows(next, num_ranks())
                                     << " receive rows per rank, but MoE layer " << layer_index_
                                     << " was sized for " << max_recv_rows_);
    config_ = next;
}

void MoeLayer::set_selection_bias(const float* bias) {
    std::copy(bias, bias + config_.num_experts, selection_bias_.begin());
}

void MoeLayer::init_params(uint64_t seed) {
    const int64_t E = config_.num_experts, d = config_.d_model, f = config_.d_ff, EL = num_local_experts_;
    const int64_t first = rank() * EL;  // first global expert on this rank
    const float inv_sqrt_d = 1.0f / std::sqrt(static_cast<float>(d));
    const float inv_sqrt_f = 1.0f / std::sqrt(static_cast<float>(f));
    synthetic_fill(params_.router_w, seed, kStreamRouterW, 0, d * E, inv_sqrt_d);
    if (params_.router_noise_w)
        synthetic_fill(params_.router_noise_w, seed, kStreamRouterNoiseW, 0, d * E, 0.1f * inv_sqrt_d);
    synthetic_fill(params_.w1, seed, kStreamW1, first * d * f, EL * d * f, inv_sqrt_d);
    synthetic_fill(params_.w2, seed, kStreamW2, first * f * d, EL * f * d, inv_sqrt_f);
    if (params_.w3) synthetic_fill(params_.w3, seed, kStreamW3, first * d * f, EL * d * f, inv_sqrt_d);
    if (params_.b1) synthetic_fill(params_.b1, seed, kStreamB1, first * f, EL * f, 0.02f);
    if (params_.b2) synthetic_fill(params_.b2, seed, kStreamB2, first * d, EL * d, 0.02f);
}

void MoeLayer::zero_grads() {
    std::fill(grad_memory_.begin(), grad_memory_.end(), 0.0f);
}

ExpertWeights MoeLayer::expert_weights(int64_t le) const {
    const int64_t d = config_.d_model, f = config_.d_ff;
    return ExpertWeights{params_.w1 + le * d * f, params_.b1 ? params_.b1 + le * f : nullptr,
                         params_.w2 + le * f * d, params_.b2 ? params_.b2 + le * d : nullptr,
                         params_.w3 ? params_.w3 + le * d * f : nullptr};
}

ExpertGrads MoeLayer::expert_grads(int64_t le) const {
    const int64_t d = config_.d_model, f = config_.d_ff;
    return ExpertGrads{grads_.w1 + le * d * f, grads_.b1 ? grads_.b1 + le * f : nullptr,
                       grads_.w2 + le * f * d, grads_.b2 ? grads_.b2 + le * d : nullptr,
                       grads_.w3 ? grads_.w3 + le * d * f : nullptr};
}

ExpertActivations MoeLayer::expert_acts(int64_t row_begin) {
    const int64_t f = config_.d_ff;
    return ExpertActivations{act_h_.data() + row_begin * f,
                             act_g_.empty() ? nullptr : act_g_.data() + row_begin * f,
                             act_a_.data() + row_begin * f, act_dh_.data() + row_begin * f};
}

// A shadow slot holds one expert's parameters packed as w1 [d,f], b1 [f], w2 [f,d], b2 [d], w3 [d,f].
ExpertWeights MoeLayer::shadow_weights(int i) const {
    const int64_t d = config_.d_model, f = config_.d_ff;
    const float* p = shadow_params_.data() + i * expert_floats_;
    const float* b1 = params_.b1 ? p + d * f : nullptr;
    const float* w2 = p + d * f + (b1 ? f : 0);
    const float* b2 = params_.b2 ? w2 + f * d : nullptr;
    const float* w3 = params_.w3 ? w2 + f * d + (b2 ? d : 0) : nullptr;
    return ExpertWeights{p, b1, w2, b2, w3};
}

ExpertGrads MoeLayer::shadow_grads(int i) const {
    const int64_t d = config_.d_model, f = config_.d_ff;
    float* p = const_cast<float*>(shadow_grads_.data()) + i * expert_floats_;
    float* b1 = params_.b1 ? p + d * f : nullptr;
    float* w2 = p + d * f + (b1 ? f : 0);
    float* b2 = params_.b2 ? w2 + f * d : nullptr;
    float* w3 = params_.w3 ? w2 + f * d + (b2 ? d : 0) : nullptr;
    return ExpertGrads{p, b1, w2, b2, w3};
}

ExpertActivations MoeLayer::shadow_acts(int64_t row_begin) {
    const int64_t f = config_.d_ff;
    return ExpertActivations{shadow_h_.data() + row_begin * f,
                             shadow_g_.empty() ? nullptr : shadow_g_.data() + row_begin * f,
                             shadow_a_.data() + row_begin * f, shadow_dh_.data() + row_begin * f};
}

// ------------------------------------------------------------------------------------------------
// Forward

void MoeLayer::forward(float* y, const float* x, int64_t step, uint64_t seed) {
    stats_ = LayerStepStats{};
    double t0 = now_s();
    route(x, step, seed);
    double t1 = now_s();
    stats_.phase_s[kFwdRoute] = t1 - t0;
    exchange_counts(step);
    update_selection_bias();
    double t2 = now_s();
    stats_.phase_s[kFwdCountExchange] = t2 - t1;
    plan_layout();
    double t3 = now_s();
    stats_.phase_s[kFwdLayout] = t3 - t2;
    broadcast_shadow_weights();
    pack_rows(x);
    double wait_in = 0, compute = 0, wait_out = 0;
    run_experts(false, &wait_in, &compute, &wait_out);
    double t4 = now_s();
    combine(y);
    double t5 = now_s();
    stats_.phase_s[kFwdDispatch] = (t4 - t3) - compute - wait_out;
    stats_.phase_s[kFwdExpert] = compute;
    stats_.phase_s[kFwdCombine] = wait_out + (t5 - t4);
}

void MoeLayer::route(const float* x, int64_t step, uint64_t seed) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model;
    int64_t num_nonfinite = 0;
    for (int64_t i = 0; i < T * d; ++i) num_nonfinite += !std::isfinite(x[i]);
    GateRouting routing;
    routing.selection_bias = config_.router_bias_rate > 0 ? selection_bias_.data() : nullptr;
    routing.node_of_expert = node_of_expert_.data();
    routing.num_nodes = cluster_.nodes.num_nodes;
    routing.node_limit = config_.node_limit;
    routing.home_node = cluster_.nodes.node_of_rank[rank()];
    routing.max_offnode = max_offnode_;
    gate_inputs_ = GateInputs{
        x, params_.router_w, params_.router_noise_w, router_bias_.data(), T, rank() * T, seed, step, routing};
    GatePartialSums sums{prob_sum_.data(), local_requested_.data()};
    if (num_nonfinite == 0) {
        gate_forward(gate_, &sums, gate_inputs_, config_);
    } else {  // skip the gate on garbage; every rank learns of it in the count exchange and stops
        std::fill(prob_sum_.begin(), prob_sum_.end(), 0.0);
        std::fill(local_requested_.begin(), local_requested_.end(), 0);
    }
    const int64_t E = config_.num_experts;
    std::copy(local_requested_.begin(), local_requested_.end(), count_send_.begin());
    count_send_[E] = sums.num_skipped;
    count_send_[E + 1] = num_nonfinite;
    count_send_[E + 2] = sums.num_redirected;
    stats_.num_redirected = sums.num_redirected;
    std::copy(prob_sum_.begin(), prob_sum_.end(), sum_send_.begin());
    sum_send_[E] = sums.z_sum;
}

void MoeLayer::exchange_counts(int64_t step) {
    const int64_t P = num_ranks(), E = config_.num_experts, k = config_.top_k, W = E + 3;
    comm_.allgather_i64(count_send_.data(), count_recv_.data(), W);
    comm_.allgather_f64(sum_send_.data(), sum_recv_.data(), E + 1);
    for (int64_t r = 0; r < P; ++r) {
        const int64_t bad = count_recv_[r * W + E + 1];
        if (bad > 0)
            EXPAR_FAIL("non-finite input to MoE layer " << layer_index_ << " at step " << step << ": " << bad
                                                        << " NaN/Inf values in x on rank " << r);
    }
    // Global sums in rank order: the same bits on every rank.
    const double T_global = static_cast<double>(P * config_.tokens_per_rank);
    handle_.num_skipped = 0;
    double z_sum = 0;
    int64_t total = 0;
    std::fill(prob_sum_.begin(), prob_sum_.end(), 0.0);
    for (int64_t r = 0; r < P; ++r) {
        for (int64_t e = 0; e < E; ++e) {
            handle_.requested[r * E + e] = count_recv_[r * W + e];
            total += handle_.requested[r * E + e];
            prob_sum_[e] += sum_recv_[r * (E + 1) + e];
        }
        handle_.num_skipped += count_recv_[r * W + E];
        stats_.num_redirected_global += count_recv_[r * W + E + 2];
        z_sum += sum_recv_[r * (E + 1) + E];
    }
    if (total + handle_.num_skipped != P * config_.tokens_per_rank * k)
        throw_error(__FILE__, __LINE__, "invariant broken: routed + skipped assignments != T·k", true);
    double aux = 0;
    for (int64_t e = 0; e < E; ++e) {
        int64_t requested_e = 0;
        for (int64_t r = 0; r < P; ++r) requested_e += handle_.requested[r * E + e];
        expert_load_[e] = requested_e;
        const double f_e = static_cast<double>(requested_e) / (T_global * k);
        aux += f_e * prob_sum_[e] / T_global;
        aux_dprob_[e] = config_.aux_loss_coef * static_cast<double>(E) * f_e / T_global;
    }
    stats_.aux_loss = static_cast<double>(E) * aux;
    stats_.z_loss = z_sum / T_global;
}

// DeepSeek-V3 auxiliary-loss-free balancing: after each step an overloaded expert's bias drops by gamma
// and an underloaded one's rises by gamma (global routed load against the mean). Same bits everywhere.
void MoeLayer::update_selection_bias() {
    if (config_.router_bias_rate <= 0) return;
    router_bias_update(selection_bias_.data(), expert_load_.data(), config_.num_experts,
                       config_.router_bias_rate);
}

void MoeLayer::plan_layout() {
    const int64_t P = num_ranks(), E = config_.num_experts, T = config_.tokens_per_rank, k = config_.top_k;
    const int64_t EL = num_local_experts_, me = rank();
    DispatchHandle& h = handle_;
    // Routed assignments of this rank sorted by expert, stable in token order (counting sort).
    std::fill(expert_begin_.begin(), expert_begin_.end(), 0);
    for (int64_t s = 0; s < T * k; ++s)
        if (slot_routed_[s]) ++expert_begin_[slot_expert_[s] + 1];
    for (int64_t e = 0; e < E; ++e) expert_begin_[e + 1] += expert_begin_[e];
    std::copy(expert_begin_.begin(), expert_begin_.end() - 1, expert_fill_.begin());
    for (int64_t s = 0; s < T * k; ++s)
        if (slot_routed_[s]) by_expert_[expert_fill_[slot_expert_[s]]++] = s;

    h.capacity = capacity_of_step(config_, h.requested.data(), static_cast<int>(P));
    if (capacity_needs_key_exchange(config_)) {
        select_probs_global();
    } else {
        capacity_allowed_from_counts(h.allowed.data(), h.requested.data(), static_cast<int>(P), config_);
    }
    choose_shadows();

    // Keep the first allowed[me][e] of each expert's assignments in policy order, in token order within
    // an expert. Rows: network rows expert-major (so grouped by owner), then the shadowed experts' rows.
    std::fill(h.kept.begin(), h.kept.end(), 0);
    std::fill(slot_row_.begin(), slot_row_.end(), -1);
    int64_t row = 0;
    int shadow_slot = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (int64_t e = 0; e < E; ++e) {
            if ((pass == 0) == (h.shadowed[e] != 0)) continue;
            int64_t* segment = by_expert_.data() + expert_begin_[e];
            const int64_t count = expert_begin_[e + 1] - expert_begin_[e];
            const int64_t keep = h.allowed[me * E + e];
            EXPAR_ASSERT(keep <= count);
            if (config_.drop_policy == DropPolicy::probs && keep < count) {
                const float* w = slot_weight_.data();
                std::sort(segment, segment + count, [w](int64_t a, int64_t b) {
                    if (w[a] != w[b]) return w[a] > w[b];
                    return a < b;
                });
                std::sort(segment, segment + keep);
            }
            if (pass == 1) shadow_row_begin_[shadow_slot++] = row - h.num_send;
            for (int64_t i = 0; i < keep; ++i) {
                h.kept[segment[i]] = 1;
                slot_row_[segment[i]] = row;
                h.send_slot[row++] = segment[i];
            }
        }
        if (pass == 0) h.num_send = row;
    }
    h.num_shadow_rows = row - h.num_send;
    if (h.num_shadowed > 0) shadow_row_begin_[h.num_shadowed] = h.num_shadow_rows;

    // Row counts per peer and the exchange's traffic matrix: experts of rank r are [r·EL, (r+1)·EL).
    for (int64_t src = 0; src < P; ++src)
        for (int64_t dst = 0; dst < P; ++dst) {
            int64_t rows = 0;
            for (int64_t le = 0; le < EL; ++le) rows += h.sent[src * E + dst * EL + le];
            h.rows[src * P + dst] = rows;
        }
    int64_t send_offset = 0, recv_offset = 0;
    for (int64_t r = 0; r < P; ++r) {
        h.send_rows[r] = h.rows[me * P + r];
        h.send_offsets[r] = send_offset;
        h.recv_rows[r] = h.rows[r * P + me];
        h.recv_offsets[r] = recv_offset;
        send_offset += h.send_rows[r];
        recv_offset += h.recv_rows[r];
    }
    h.num_recv = recv_offset;
    EXPAR_ASSERT(send_offset == h.num_send);
    if (h.num_recv > max_recv_rows_)
        throw_error(__FILE__, __LINE__, "receive buffer too small for this step's load", false);
    // Blocks (local expert le, source r): expert-major, sources in rank order within an expert.
    expert_row_begin_[0] = 0;
    for (int64_t le = 0; le < EL; ++le) {
        int64_t rows = expert_row_begin_[le];
        for (int64_t r = 0; r < P; ++r) {
            block_begin_[le * P + r] = rows;
            rows += h.sent[r * E + me * EL + le];
        }
        expert_row_begin_[le + 1] = rows;
    }
    for (int64_t r = 0; r < P; ++r) {
        int64_t rows = h.recv_offsets[r];
        for (int64_t le = 0; le < EL; ++le) {
            source_block_row_[r * EL + le] = rows;
            rows += h.sent[r * E + me * EL + le];
        }
    }
}

// FasterMoE Algorithm 1 on the kept-token matrix; every rank decides the same. sent = allowed with the
// shadowed experts' columns zeroed: those tokens never travel.
void MoeLayer::choose_shadows() {
    DispatchHandle& h = handle_;
    const int64_t P = num_ranks(), E = config_.num_experts;
    std::copy(h.allowed.begin(), h.allowed.end(), h.sent.begin());
    std::fill(h.shadowed.begin(), h.shadowed.end(), 0);
    h.num_shadowed = 0;
    if (!shadow_policy_) return;
    h.num_shadowed =
        shadow_policy_->select(h.shadowed.data(), h.allowed.data(), static_cast<int>(shadow_expert_.size()));
    int slot = 0;
    for (int64_t e = 0; e < E; ++e) {
        if (!h.shadowed[e]) continue;
        shadow_expert_[slot++] = e;
        for (int64_t r = 0; r < P; ++r) h.sent[r * E + e] = 0;
    }
    stats_.num_shadowed = h.num_shadowed;
}

// (probs, global): the owner of each overflowing expert sees every source's keys (weight, global slot)
// and keeps the `capacity` best; each source keeps the prefix of its own keys that made it.
void MoeLayer::select_probs_global() {
    const int64_t P = num_ranks(), E = config_.num_experts, k = config_.top_k, EL = num_local_experts_;
    const int64_t me = rank(), first_slot = me * config_.tokens_per_rank * k;
    const int64_t capacity = handle_.capacity;
    auto overflowing = [&](int64_t e) { return expert_load_[e] > capacity; };
    int64_t n = 0;
    for (int64_t r = 0; r < P; ++r) {
        key_send_offsets_[r] = n;
        for (int64_t e = r * EL; e < (r + 1) * EL; ++e) {
            if (!overflowing(e)) continue;
            for (int64_t i = expert_begin_[e]; i < expert_begin_[e + 1]; ++i) {
                const int64_t slot = by_expert_[i];
                key_send_[n++] = Key{slot_weight_[slot], 0, first_slot + slot};
            }
        }
        key_send_rows_[r] = n - key_send_offsets_[r];
    }
    int64_t m = 0;
    for (int64_t r = 0; r < P; ++r) {
        key_recv_offsets_[r] = m;
        key_recv_rows_[r] = 0;
        for (int64_t e = me * EL; e < (me + 1) * EL; ++e)
            if (overflowing(e)) key_recv_rows_[r] += handle_.requested[r * E + e];
        m += key_recv_rows_[r];
    }
    static_assert(sizeof(Key) == 4 * sizeof(float), "a key travels as a row of 4 floats");
    comm_.alltoallv_rows(reinterpret_cast<const float*>(key_send_.data()), key_send_rows_.data(),
                         key_send_offsets_.data(), reinterpret_cast<float*>(key_recv_.data()),
                         key_recv_rows_.data(), key_recv_offsets_.data(), 4);
    for (int64_t le = 0; le < EL; ++le) {
        const int64_t e = me * EL + le;
        if (!overflowing(e)) {
            for (int64_t r = 0; r < P; ++r) allowed_block_[le * P + r] = handle_.requested[r * E + e];
            continue;
        }
        // Gather expert e's keys from every source segment (sources send experts in ascending order).
        int64_t count = 0;
        for (int64_t r = 0; r < P; ++r) {
            int64_t cursor = key_recv_offsets_[r];
            for (int64_t e2 = me * EL; e2 < e; ++e2)
                if (overflowing(e2)) cursor += handle_.requested[r * E + e2];
            for (int64_t i = 0; i < handle_.requested[r * E + e]; ++i) {
                key_scratch_[count] = key_recv_[cursor + i];
                key_scratch_[count].pad = static_cast<int32_t>(r);
                ++count;
            }
            allowed_block_[le * P + r] = 0;
        }
        std::nth_element(key_scratch_.begin(), key_scratch_.begin() + (capacity - 1),
                         key_scratch_.begin() + count, KeyBefore{});
        const Key threshold = key_scratch_[capacity - 1];
        for (int64_t i = 0; i < count; ++i)
            if (!KeyBefore{}(threshold, key_scratch_[i])) ++allowed_block_[le * P + key_scratch_[i].pad];
    }
    comm_.allgather_i64(allowed_block_.data(), allowed_blocks_.data(), EL * P);
    for (int64_t r = 0; r < P; ++r)
        for (int64_t le = 0; le < EL; ++le)
            for (int64_t s = 0; s < P; ++s)
                handle_.allowed[s * E + r * EL + le] = allowed_blocks_[r * EL * P + le * P + s];
}

void MoeLayer::broadcast_shadow_weights() {
    const int64_t d = config_.d_model, f = config_.d_ff, EL = num_local_experts_;
    for (int i = 0; i < handle_.num_shadowed; ++i) {
        const int64_t e = shadow_expert_[i];
        const int owner = static_cast<int>(e / EL);
        float* slot = shadow_params_.data() + i * expert_floats_;
        if (rank() == owner) {  // pack w1, b1, w2, b2, w3 of the local expert
            const ExpertWeights w = expert_weights(e - owner * EL);
            float* out = std::copy(w.w1, w.w1 + d * f, slot);
            if (w.b1) out = std::copy(w.b1, w.b1 + f, out);
            out = std::copy(w.w2, w.w2 + f * d, out);
            if (w.b2) out = std::copy(w.b2, w.b2 + d, out);
            if (w.w3) out = std::copy(w.w3, w.w3 + d * f, out);
        }
        comm_.broadcast_f32(slot, expert_floats_, owner);
    }
}

// Each rank's gradients of a shadowed expert are summed onto the owner, which adds them to its own.
void MoeLayer::reduce_shadow_grads() {
    const int64_t EL = num_local_experts_;
    for (int i = 0; i < handle_.num_shadowed; ++i) {
        const int64_t e = shadow_expert_[i];
        const int owner = static_cast<int>(e / EL);
        float* slot = shadow_grads_.data() + i * expert_floats_;
        comm_.reduce_sum_f32(slot, expert_floats_, owner);
        if (rank() != owner) continue;
        const ExpertGrads sum = shadow_grads(i), mine = expert_grads(e - owner * EL);
        const int64_t d = config_.d_model, f = config_.d_ff;
        auto add = [](float* to, const float* from, int64_t n) {
            if (to)
                for (int64_t j = 0; j < n; ++j) to[j] += from[j];
        };
        add(mine.dw1, sum.dw1, d * f);
        add(mine.db1, sum.db1, f);
        add(mine.dw2, sum.dw2, f * d);
        add(mine.db2, sum.db2, d);
        add(mine.dw3, sum.dw3, d * f);
    }
}

void MoeLayer::pack_rows(const float* x) {
    const int64_t d = config_.d_model, k = config_.top_k;
    const DispatchHandle& h = handle_;
    for (int64_t row = 0; row < h.num_send; ++row) {
        const int64_t t = h.send_slot[row] / k;
        std::memcpy(send_buf_.data() + row * d, x + t * d, sizeof(float) * d);
    }
    for (int64_t i = 0; i < h.num_shadow_rows; ++i) {
        const int64_t t = h.send_slot[h.num_send + i] / k;
        std::memcpy(shadow_x_.data() + i * d, x + t * d, sizeof(float) * d);
    }
}

// One whole exchange through the schedule (plain, hierarchical; pairwise without compute overlap).
void MoeLayer::exchange(const float* send, float* recv, bool reverse) {
    const double t0 = now_s();
    exchange_->alltoallv(send, recv, handle_.rows.data(), reverse);
    stats_.alltoallv_s += now_s() - t0;
    stats_.bytes_intra_node += exchange_->last_bytes_intra_node();
    stats_.bytes_inter_node += exchange_->last_bytes_inter_node();
    count_bytes(reverse);
}

// End-to-end token bytes to and from other ranks in one exchange.
void MoeLayer::count_bytes(bool reverse) {
    const DispatchHandle& h = handle_;
    const int64_t d = config_.d_model, me = rank();
    const int64_t sent = reverse ? h.num_recv - h.recv_rows[me] : h.num_send - h.send_rows[me];
    const int64_t received = reverse ? h.num_send - h.send_rows[me] : h.num_recv - h.recv_rows[me];
    stats_.alltoallv_bytes_sent += sent * d * static_cast<int64_t>(sizeof(float));
    stats_.alltoallv_bytes_recv += received * d * static_cast<int64_t>(sizeof(float));
}

// The expert work on the rows from one source rank, block by block (local expert le, source src).
// Every schedule makes exactly these calls on exactly these blocks, so all schedules agree bit for
// bit. Forward: x rows in recv_buf_ -> y rows in their place. Backward: dy rows -> dx rows in place.
void MoeLayer::compute_source(int src, bool backward_pass) {
    const int64_t d = config_.d_model, E = config_.num_experts, EL = num_local_experts_, me = rank();
    const ExpertShape shape{config_.d_model, config_.d_ff, config_.activation};
    for (int64_t le = 0; le < EL; ++le) {
        const int64_t rows = handle_.sent[src * E + me * EL + le];
        if (rows == 0) continue;
        const int64_t begin = block_begin_[le * num_ranks() + src];
        float* io = recv_buf_.data() + source_block_row_[src * EL + le] * d;
        if (!backward_pass) {
            std::memcpy(expert_x_.data() + begin * d, io, sizeof(float) * rows * d);
            experts_.forward(io, expert_acts(begin), expert_x_.data() + begin * d, expert_weights(le), rows,
                             shape);
            stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
        } else {
            std::memcpy(expert_dy_.data() + begin * d, io, sizeof(float) * rows * d);
            experts_.backward_data(io, expert_dy_.data() + begin * d, expert_acts(begin), expert_weights(le),
                                   rows, shape);
            stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
        }
    }
}

// Rows of shadowed experts, computed here with the broadcast weights. Outputs land after the network
// rows of combine_recv_ (forward) or return_buf_ (backward), so combine reads every slot the same way.
void MoeLayer::compute_shadows(bool backward_pass) {
    const int64_t d = config_.d_model, n0 = handle_.num_send;
    const ExpertShape shape{config_.d_model, config_.d_ff, config_.activation};
    for (int i = 0; i < handle_.num_shadowed; ++i) {
        const int64_t begin = shadow_row_begin_[i], rows = shadow_row_begin_[i + 1] - begin;
        if (!backward_pass) {
            experts_.forward(combine_recv_.data() + (n0 + begin) * d, shadow_acts(begin),
                             shadow_x_.data() + begin * d, shadow_weights(i), rows, shape);
            stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
        } else {
            const float* dy = send_buf_.data() + (n0 + begin) * d;
            experts_.backward_data(return_buf_.data() + (n0 + begin) * d, dy, shadow_acts(begin),
                                   shadow_weights(i), rows, shape);
            std::fill(shadow_grads_.begin() + i * expert_floats_,
                      shadow_grads_.begin() + (i + 1) * expert_floats_, 0.0f);
            experts_.backward_weights(shadow_grads(i), dy, shadow_x_.data() + begin * d, shadow_acts(begin),
                                      rows, shape);
            stats_.expert_flops += 2.0 * expert_ffn_forward_flops(rows, shape);
        }
    }
}

// Exchange rows to the owners, compute, return the results: send_buf_ rows out, results back into
// combine_recv_ (forward) or return_buf_ (backward), in send order. plain and hierarchical do it in
// three steps; pairwise pipelines it stage by stage (FasterMoE smart scheduling): the next stage's
// sends and receives are posted before the current stage's compute, and each stage's results are
// returned as soon as they are done.
void MoeLayer::run_experts(bool backward_pass, double* wait_in_s, double* compute_s, double* wait_out_s) {
    const DispatchHandle& h = handle_;
    const int P = num_ranks(), me = rank();
    const int64_t d = config_.d_model;
    float* results = backward_pass ? return_buf_.data() : combine_recv_.data();
    if (config_.schedule != ScheduleKind::pairwise) {
        double t0 = now_s();
        exchange(send_buf_.data(), recv_buf_.data(), false);
        double t1 = now_s();
        compute_shadows(backward_pass);
        for (int src = 0; src < P; ++src) compute_source(src, backward_pass);
        double t2 = now_s();
        exchange(recv_buf_.data(), results, true);
        *wait_in_s = t1 - t0;
        *compute_s = t2 - t1;
        *wait_out_s = now_s() - t2;
        return;
    }
    constexpr int kTagTokens = 7001, kTagResults = 7002;
    const auto& stages = exchange_->stages();
    const int num_stages = static_cast<int>(stages.size());
    const double t_start = now_s();
    double compute = 0, wait_in = 0;
    comm_.clear_requests();
    // Results come back into disjoint slices of `results`: post all their receives up front.
    for (int r = 0; r < P; ++r)
        if (r != me && h.send_rows[r] > 0)
            comm_.post_recv_rows(results + h.send_offsets[r] * d, h.send_rows[r], d, r, kTagResults);
    auto post_stage = [&](int s) {
        stage_first_[s] = comm_.num_posted();
        for (int dst : stages[s].send_to) {
            if (dst == me) {
                std::memcpy(recv_buf_.data() + h.recv_offsets[me] * d,
                            send_buf_.data() + h.send_offsets[me] * d, sizeof(float) * h.send_rows[me] * d);
            } else if (h.send_rows[dst] > 0) {
                comm_.post_send_rows(send_buf_.data() + h.send_offsets[dst] * d, h.send_rows[dst], d, dst,
                                     kTagTokens);
            }
        }
        for (int src : stages[s].recv_from)
            if (src != me && h.recv_rows[src] > 0)
                comm_.post_recv_rows(recv_buf_.data() + h.recv_offsets[src] * d, h.recv_rows[src], d, src,
                                     kTagTokens);
        stage_count_[s] = comm_.num_posted() - stage_first_[s];
    };
    post_stage(0);
    double t = now_s();
    compute_shadows(backward_pass);  // overlaps the first stage's transfers
    compute += now_s() - t;
    for (int s = 0; s < num_stages; ++s) {
        t = now_s();
        comm_.wait_requests(stage_first_[s], stage_count_[s]);
        if (s + 1 < num_stages) post_stage(s + 1);
        wait_in += now_s() - t;
        for (int src : stages[s].recv_from) {
            t = now_s();
            compute_source(src, backward_pass);
            compute += now_s() - t;
            const float* out = recv_buf_.data() + h.recv_offsets[src] * d;
            if (src == me)
                std::memcpy(results + h.send_offsets[me] * d, out, sizeof(float) * h.recv_rows[me] * d);
            else if (h.recv_rows[src] > 0)
                comm_.post_send_rows(out, h.recv_rows[src], d, src, kTagResults);
        }
    }
    t = now_s();
    comm_.wait_requests(0, comm_.num_posted());
    comm_.clear_requests();
    const double t_end = now_s();
    *wait_in_s = wait_in;
    *compute_s = compute;
    *wait_out_s = t_end - t;
    stats_.alltoallv_s += (t_end - t_start) - compute;
    // Bytes: the same end-to-end traffic as plain, each row crossing one link.
    for (bool reverse : {false, true}) {
        count_bytes(reverse);
        for (int r = 0; r < P; ++r) {
            if (r == me) continue;
            const int64_t bytes =
                (reverse ? h.recv_rows[r] : h.send_rows[r]) * d * static_cast<int64_t>(sizeof(float));
            (cluster_.nodes.same_node(me, r) ? stats_.bytes_intra_node : stats_.bytes_inter_node) += bytes;
        }
    }
}

void MoeLayer::combine(float* y) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model, k = config_.top_k;
    // y[t] = Σ_j w_j · out_j over kept slots, in slot order (the same order at any rank count).
    for (int64_t t = 0; t < T; ++t) {
        float* out = y + t * d;
        std::fill(out, out + d, 0.0f);
        for (int64_t j = 0; j < k; ++j) {
            const int64_t row = slot_row_[t * k + j];
            if (row < 0) continue;
            const float w = slot_weight_[t * k + j];
            const float* expert_out = combine_recv_.data() + row * d;
            for (int64_t i = 0; i < d; ++i) out[i] += w * expert_out[i];
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Backward

void MoeLayer::backward(float* dx, const float* dy) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model, k = config_.top_k;
    const int64_t P = num_ranks(), EL = num_local_experts_;
    const ExpertShape shape{config_.d_model, config_.d_ff, config_.activation};

    // Combine backward: dL/dw = dy·out per kept slot; each expert gets w·dy as its output gradient.
    double t0 = now_s();
    for (int64_t s = 0; s < T * k; ++s) {
        const int64_t row = slot_row_[s];
        dslot_weight_[s] = 0.0f;
        if (row < 0) continue;
        const float* g = dy + (s / k) * d;
        const float* out = combine_recv_.data() + row * d;
        float* send = send_buf_.data() + row * d;
        const float w = slot_weight_[s];
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) {
            dot += static_cast<double>(g[i]) * out[i];
            send[i] = w * g[i];
        }
        dslot_weight_[s] = static_cast<float>(dot);
    }
    double t1 = now_s();
    double wait_in = 0, compute = 0, wait_out = 0;
    run_experts(true, &wait_in, &compute, &wait_out);
    // Weight gradients once per expert over all its rows, in block order: the same GEMMs for every schedule.
    double t2 = now_s();
    for (int64_t le = 0; le < EL; ++le) {
        const int64_t begin = expert_row_begin_[le], rows = expert_row_begin_[le + 1] - begin;
        experts_.backward_weights(expert_grads(le), expert_dy_.data() + begin * d,
                                  expert_x_.data() + begin * d, expert_acts(begin), rows, shape);
        stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
    }
    reduce_shadow_grads();
    double t3 = now_s();
    stats_.phase_s[kBwdCombine] = (t1 - t0) + wait_in;
    stats_.phase_s[kBwdExpert] = compute + (t3 - t2);

    // dx[t] = Σ_j dx rows of its kept slots, in slot order (the same order at any rank count).
    for (int64_t t = 0; t < T; ++t) {
        float* out = dx + t * d;
        std::fill(out, out + d, 0.0f);
        for (int64_t j = 0; j < k; ++j) {
            const int64_t row = slot_row_[t * k + j];
            if (row < 0) continue;
            const float* g = return_buf_.data() + row * d;
            for (int64_t i = 0; i < d; ++i) out[i] += g[i];
        }
    }
    double t4 = now_s();
    stats_.phase_s[kBwdDispatch] = wait_out + (t4 - t3);

    const double T_global = static_cast<double>(P * T);
    const GateLossGrads loss{aux_dprob_.data(), config_.z_loss_coef * 2.0 / T_global};
    gate_backward(dx, grads_.router_w, grads_.router_noise_w, dlogits_.data(), dnoise_.data(),
                  dslot_weight_.data(), gate_, gate_inputs_, loss, config_);
    stats_.phase_s[kBwdRoute] = now_s() - t4;
}

void MoeLayer::allreduce_router_grads() {
    const int64_t n = config_.d_model * config_.num_experts;
    comm_.allreduce_sum_f32(grads_.router_w, n);
    if (grads_.router_noise_w) comm_.allreduce_sum_f32(grads_.router_noise_w, n);
}

void MoeLayer::sgd_update(float learning_rate) {
    for (int64_t i = 0; i < num_param_floats_; ++i) param_memory_[i] -= learning_rate * grad_memory_[i];
}

}  // namespace expar
