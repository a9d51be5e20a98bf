#include "moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include "capacity.h"
#include "check.h"
#include "rng.h"
#include "synthetic.h"
#include "timer.h"
#include "token_rows.h"

namespace expar {

namespace {

// Order of the probs drop policy: larger weight first, then lower global slot (= lower token index).
struct KeyBefore {
    template <typename K>
    bool operator()(const K& a, const K& b) const {
        if (a.weight != b.weight) return a.weight > b.weight;
        return a.global_slot < b.global_slot;
    }
};

}  // namespace

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

    gate_buffers_.resize(config_, static_cast<int>(P), cluster_.nodes.num_nodes);
    gate_ = gate_buffers_.state();
    // (probs, global) needs the key exchange whenever cf > 0: sized by scope and policy alone, so that
    // set_capacity_factor can switch between dropless and a capacity without allocating.
    if (config_.capacity_scope == CapacityScope::global && config_.drop_policy == DropPolicy::probs)
        keys_.resize(config_, static_cast<int>(P));
    const int max_shadowed =
        config_.shadow ? static_cast<int>(std::min<int64_t>(config_.shadow_max_experts, E)) : 0;
    layout_.resize(static_cast<int>(P), E, max_shadowed, T, static_cast<int>(k));
    layout_.rank = comm_.rank();

    // Rows an owner can receive: every kept assignment of the step in the worst case, and no more than
    // its experts' capacity allows. Sized once here; the step never allocates.
    max_recv_rows_ = moe_max_recv_rows(config_, static_cast<int>(P));
    rows_.resize(T * k, max_recv_rows_, d, f, swiglu);
    const int64_t max_rows = std::max(T * k, max_recv_rows_);
    exchange_ = std::make_unique<TokenExchange>(config_.schedule, comm_, cluster_.nodes,
                                                effective_group_size(config_, static_cast<int>(P)), max_rows,
                                                max_rows, d);

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
        shadow_.resize(max_shadowed, expert_floats_, T * k, d, f, swiglu);
    }
}

// Every buffer is touched here: fresh pages fault on first write, which would land in the first steps.
void MoeLayer::GateBuffers::resize(const LayerConfig& c, int num_ranks, int num_nodes) {
    const int64_t P = num_ranks, E = c.num_experts, T = c.tokens_per_rank, k = c.top_k;
    const bool noisy = c.gate == GateKind::noisy_topk;
    logits.assign(T * E, 0.0f);
    probs.assign(T * E, 0.0f);
    lse.assign(T, 0.0f);
    noise_logits.assign(noisy ? T * E : 0, 0.0f);
    scores.assign(noisy ? T * E : 0, 0.0f);
    dlogits.assign(T * E, 0.0f);
    dnoise.assign(T * E, 0.0f);
    slot_expert.assign(T * k, 0);
    slot_weight.assign(T * k, 0.0f);
    dslot_weight.assign(T * k, 0.0f);
    slot_routed.assign(T * k, 0);
    selection.assign(T * E, 0.0f);
    order.assign(T * k, 0);
    node_scratch.assign(num_nodes + E, 0.0f);
    prob_sum.assign(E, 0.0);
    aux_dprob.assign(E, 0.0);
    local_requested.assign(E, 0);
    expert_load.assign(E, 0);
    count_send.assign(E + 3, 0);
    count_recv.assign(P * (E + 3), 0);
    sum_send.assign(E + 1, 0.0);
    sum_recv.assign(P * (E + 1), 0.0);
}

GateState MoeLayer::GateBuffers::state() {
    return GateState{logits.data(),    probs.data(),       lse.data(),         noise_logits.data(),
                     scores.data(),    slot_expert.data(), slot_weight.data(), slot_routed.data(),
                     selection.data(), order.data(),       node_scratch.data()};
}

void MoeLayer::KeyExchange::resize(const LayerConfig& c, int num_ranks) {
    const int64_t P = num_ranks, T = c.tokens_per_rank, k = c.top_k, EL = c.num_experts / num_ranks;
    send.assign(T * k, Key{});
    recv.assign(P * T * k, Key{});
    scratch.assign(P * T * k, Key{});
    for (auto* v : {&send_rows, &send_offsets, &recv_rows, &recv_offsets}) v->assign(P, 0);
    allowed_block.assign(EL * P, 0);
    allowed_blocks.assign(P * EL * P, 0);
}

void MoeLayer::ActivationRows::resize(int64_t rows, int64_t d_ff, bool swiglu) {
    f = d_ff;
    h.assign(rows * f, 0.0f);
    g.assign(swiglu ? rows * f : 0, 0.0f);
    a.assign(rows * f, 0.0f);
    dh.assign(rows * f, 0.0f);
}

ExpertActivations MoeLayer::ActivationRows::at(int64_t row_begin) {
    return ExpertActivations{h.data() + row_begin * f, g.empty() ? nullptr : g.data() + row_begin * f,
                             a.data() + row_begin * f, dh.data() + row_begin * f};
}

void MoeLayer::RowBuffers::resize(int64_t send_rows, int64_t max_recv, int64_t d, int64_t f, bool swiglu) {
    send.assign(send_rows * d, 0.0f);
    combine_recv.assign(send_rows * d, 0.0f);
    return_rows.assign(send_rows * d, 0.0f);
    recv.assign(max_recv * d, 0.0f);
    expert_x.assign(max_recv * d, 0.0f);
    expert_dy.assign(max_recv * d, 0.0f);
    acts.resize(max_recv, f, swiglu);
}

void MoeLayer::ShadowBuffers::resize(
    int64_t slots, int64_t expert_floats, int64_t rows, int64_t d, int64_t f, bool swiglu) {
    params.assign(slots * expert_floats, 0.0f);
    grads.assign(slots * expert_floats, 0.0f);
    x.assign(rows * d, 0.0f);
    acts.resize(rows, f, swiglu);
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

// A shadow slot holds one expert's parameters packed as w1 [d,f], b1 [f], w2 [f,d], b2 [d], w3 [d,f].
ExpertWeights MoeLayer::shadow_weights(int i) const {
    const int64_t d = config_.d_model, f = config_.d_ff;
    const float* p = shadow_.params.data() + i * expert_floats_;
    const float* b1 = params_.b1 ? p + d * f : nullptr;
    const float* w2 = p + d * f + (b1 ? f : 0);
    const float* b2 = params_.b2 ? w2 + f * d : nullptr;
    const float* w3 = params_.w3 ? w2 + f * d + (b2 ? d : 0) : nullptr;
    return ExpertWeights{p, b1, w2, b2, w3};
}

ExpertGrads MoeLayer::shadow_grads(int i) const {
    const int64_t d = config_.d_model, f = config_.d_ff;
    float* p = const_cast<float*>(shadow_.grads.data()) + i * expert_floats_;
    float* b1 = params_.b1 ? p + d * f : nullptr;
    float* w2 = p + d * f + (b1 ? f : 0);
    float* b2 = params_.b2 ? w2 + f * d : nullptr;
    float* w3 = params_.w3 ? w2 + f * d + (b2 ? d : 0) : nullptr;
    return ExpertGrads{p, b1, w2, b2, w3};
}

SlotRouting MoeLayer::slot_routing() const {
    const GateBuffers& g = gate_buffers_;
    return SlotRouting{g.slot_expert.data(), g.slot_weight.data(), g.slot_routed.data(),
                       config_.tokens_per_rank, config_.top_k};
}

// ------------------------------------------------------------------------------------------------
// Forward

// Phases, each timed by its own clock reads: route; count exchange (and the router-bias update); layout;
// dispatch = shadow weight broadcast + pack + waiting for the rows to arrive; expert = the expert blocks;
// combine = waiting for the results to come back + the gate-weighted sum. Under the pairwise schedule
// the transfers overlap the expert blocks: dispatch and combine then hold only the time spent blocked.
void MoeLayer::forward(float* y, const float* x, int64_t step, uint64_t seed) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model, k = config_.top_k;
    stats_ = LayerStepStats{};
    const double t0 = now_s();
    route(x, step, seed);
    const double t1 = now_s();
    exchange_counts(step);
    update_selection_bias();
    const double t2 = now_s();
    plan_layout();
    const double t3 = now_s();
    broadcast_shadow_weights();
    dispatch_pack(rows_.send.data(), x, layout_.send_slot.data(), layout_.num_send, k, d);
    dispatch_pack(shadow_.x.data(), x, layout_.send_slot.data() + layout_.num_send, layout_.num_shadow_rows,
                  k, d);
    const double t4 = now_s();
    RoundTripTimes times;
    expert_round_trip(false, &times);
    const double t5 = now_s();
    combine_forward(y, rows_.combine_recv.data(), layout_.slot_row.data(), gate_buffers_.slot_weight.data(),
                    T, k, d);
    const double t6 = now_s();
    stats_.phase_s[kFwdRoute] = t1 - t0;
    stats_.phase_s[kFwdCountExchange] = t2 - t1;
    stats_.phase_s[kFwdLayout] = t3 - t2;
    stats_.phase_s[kFwdDispatch] = (t4 - t3) + times.wait_in_s;
    stats_.phase_s[kFwdExpert] = times.compute_s;
    stats_.phase_s[kFwdCombine] = times.wait_out_s + (t6 - t5);
}

void MoeLayer::route(const float* x, int64_t step, uint64_t seed) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model;
    GateBuffers& g = gate_buffers_;
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
    GatePartialSums sums{g.prob_sum.data(), g.local_requested.data()};
    if (num_nonfinite == 0) {
        gate_forward(gate_, &sums, gate_inputs_, config_);
    } else {  // skip the gate on garbage; every rank learns of it in the count exchange and stops
        std::fill(g.prob_sum.begin(), g.prob_sum.end(), 0.0);
        std::fill(g.local_requested.begin(), g.local_requested.end(), 0);
    }
    const int64_t E = config_.num_experts;
    std::copy(g.local_requested.begin(), g.local_requested.end(), g.count_send.begin());
    g.count_send[E] = sums.num_skipped;
    g.count_send[E + 1] = num_nonfinite;
    g.count_send[E + 2] = sums.num_redirected;
    stats_.num_redirected = sums.num_redirected;
    std::copy(g.prob_sum.begin(), g.prob_sum.end(), g.sum_send.begin());
    g.sum_send[E] = sums.z_sum;
}

void MoeLayer::exchange_counts(int64_t step) {
    const int64_t P = num_ranks(), E = config_.num_experts, k = config_.top_k, W = E + 3;
    GateBuffers& g = gate_buffers_;
    comm_.allgather_i64(g.count_send.data(), g.count_recv.data(), W);
    comm_.allgather_f64(g.sum_send.data(), g.sum_recv.data(), E + 1);
    for (int64_t r = 0; r < P; ++r) {
        const int64_t bad = g.count_recv[r * W + E + 1];
        if (bad > 0)
            EXPAR_FAIL("non-finite input to MoE layer " << layer_index_ << " at step " << step << ": " << bad
                                                        << " NaN/Inf values in x on rank " << r);
    }
    // Global sums in rank order: the same bits on every rank.
    const double T_global = static_cast<double>(P * config_.tokens_per_rank);
    layout_.num_skipped = 0;
    double z_sum = 0;
    int64_t total = 0;
    std::fill(g.prob_sum.begin(), g.prob_sum.end(), 0.0);
    for (int64_t r = 0; r < P; ++r) {
        for (int64_t e = 0; e < E; ++e) {
            layout_.requested[r * E + e] = g.count_recv[r * W + e];
            total += layout_.requested[r * E + e];
            g.prob_sum[e] += g.sum_recv[r * (E + 1) + e];
        }
        layout_.num_skipped += g.count_recv[r * W + E];
        stats_.num_redirected_global += g.count_recv[r * W + E + 2];
        z_sum += g.sum_recv[r * (E + 1) + E];
    }
    if (total + layout_.num_skipped != P * config_.tokens_per_rank * k)
        throw_error(__FILE__, __LINE__, "invariant broken: routed + skipped assignments != T·k", true);
    double aux = 0;
    for (int64_t e = 0; e < E; ++e) {
        int64_t requested_e = 0;
        for (int64_t r = 0; r < P; ++r) requested_e += layout_.requested[r * E + e];
        g.expert_load[e] = requested_e;
        const double f_e = static_cast<double>(requested_e) / (T_global * k);
        aux += f_e * g.prob_sum[e] / T_global;
        g.aux_dprob[e] = config_.aux_loss_coef * static_cast<double>(E) * f_e / T_global;
    }
    stats_.aux_loss = static_cast<double>(E) * aux;
    stats_.z_loss = z_sum / T_global;
}

// DeepSeek-V3 auxiliary-loss-free balancing: after each step an overloaded expert's bias drops by gamma
// and an underloaded one's rises by gamma (global routed load against the mean). Same bits everywhere.
void MoeLayer::update_selection_bias() {
    if (config_.router_bias_rate <= 0) return;
    router_bias_update(selection_bias_.data(), gate_buffers_.expert_load.data(), config_.num_experts,
                       config_.router_bias_rate);
}

// The dispatch layout from the count matrix (dispatch_layout.h); only (probs, global) capacity talks to
// the other ranks, to decide which sources keep how many.
void MoeLayer::plan_layout() {
    const SlotRouting routing = slot_routing();
    plan_expert_order(&layout_, routing);
    if (capacity_needs_key_exchange(config_)) {
        layout_.capacity = capacity_of_step(config_, layout_.requested.data(), num_ranks());
        select_probs_global();
    } else {
        plan_capacity(&layout_, config_);
    }
    plan_shadows(&layout_, shadow_policy_.get());
    stats_.num_shadowed = layout_.num_shadowed;
    plan_rows(&layout_, routing, config_.drop_policy);
    plan_traffic(&layout_);
    plan_peers(&layout_);
    if (layout_.num_recv > max_recv_rows_)
        throw_error(__FILE__, __LINE__, "receive buffer too small for this step's load", false);
}

// (probs, global): the owner of each overflowing expert sees every source's keys (weight, global slot)
// and keeps the `capacity` best; each source keeps the prefix of its own keys that made it.
void MoeLayer::select_probs_global() {
    const int64_t P = num_ranks(), E = config_.num_experts, k = config_.top_k, EL = num_local_experts_;
    const int64_t me = rank(), first_slot = me * config_.tokens_per_rank * k;
    KeyExchange& keys = keys_;
    const int64_t capacity = layout_.capacity;
    const std::vector<int64_t>& expert_load = gate_buffers_.expert_load;
    auto overflowing = [&](int64_t e) { return expert_load[e] > capacity; };
    int64_t n = 0;
    for (int64_t r = 0; r < P; ++r) {
        keys.send_offsets[r] = n;
        for (int64_t e = r * EL; e < (r + 1) * EL; ++e) {
            if (!overflowing(e)) continue;
            for (int64_t i = layout_.expert_begin[e]; i < layout_.expert_begin[e + 1]; ++i) {
                const int64_t slot = layout_.by_expert[i];
                keys.send[n++] = Key{gate_buffers_.slot_weight[slot], 0, first_slot + slot};
            }
        }
        keys.send_rows[r] = n - keys.send_offsets[r];
    }
    int64_t m = 0;
    for (int64_t r = 0; r < P; ++r) {
        keys.recv_offsets[r] = m;
        keys.recv_rows[r] = 0;
        for (int64_t e = me * EL; e < (me + 1) * EL; ++e)
            if (overflowing(e)) keys.recv_rows[r] += layout_.requested[r * E + e];
        m += keys.recv_rows[r];
    }
    static_assert(sizeof(Key) == 4 * sizeof(float), "a key travels as a row of 4 floats");
    comm_.alltoallv_rows(reinterpret_cast<const float*>(keys.send.data()), keys.send_rows.data(),
                         keys.send_offsets.data(), reinterpret_cast<float*>(keys.recv.data()),
                         keys.recv_rows.data(), keys.recv_offsets.data(), 4);
    for (int64_t le = 0; le < EL; ++le) {
        const int64_t e = me * EL + le;
        if (!overflowing(e)) {
            for (int64_t r = 0; r < P; ++r) keys.allowed_block[le * P + r] = layout_.requested[r * E + e];
            continue;
        }
        // Gather expert e's keys from every source segment (sources send experts in ascending order).
        int64_t count = 0;
        for (int64_t r = 0; r < P; ++r) {
            int64_t cursor = keys.recv_offsets[r];
            for (int64_t e2 = me * EL; e2 < e; ++e2)
                if (overflowing(e2)) cursor += layout_.requested[r * E + e2];
            for (int64_t i = 0; i < layout_.requested[r * E + e]; ++i) {
                keys.scratch[count] = keys.recv[cursor + i];
                keys.scratch[count].source = static_cast<int32_t>(r);
                ++count;
            }
            keys.allowed_block[le * P + r] = 0;
        }
        std::nth_element(keys.scratch.begin(), keys.scratch.begin() + (capacity - 1),
                         keys.scratch.begin() + count, KeyBefore{});
        const Key threshold = keys.scratch[capacity - 1];
        for (int64_t i = 0; i < count; ++i)
            if (!KeyBefore{}(threshold, keys.scratch[i]))
                ++keys.allowed_block[le * P + keys.scratch[i].source];
    }
    comm_.allgather_i64(keys.allowed_block.data(), keys.allowed_blocks.data(), EL * P);
    for (int64_t r = 0; r < P; ++r)
        for (int64_t le = 0; le < EL; ++le)
            for (int64_t s = 0; s < P; ++s)
                layout_.allowed[s * E + r * EL + le] = keys.allowed_blocks[r * EL * P + le * P + s];
}

void MoeLayer::broadcast_shadow_weights() {
    const int64_t d = config_.d_model, f = config_.d_ff, EL = num_local_experts_;
    for (int i = 0; i < layout_.num_shadowed; ++i) {
        const int64_t e = layout_.shadow_expert[i];
        const int owner = static_cast<int>(e / EL);
        float* slot = shadow_.params.data() + i * expert_floats_;
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
    for (int i = 0; i < layout_.num_shadowed; ++i) {
        const int64_t e = layout_.shadow_expert[i];
        const int owner = static_cast<int>(e / EL);
        float* slot = shadow_.grads.data() + i * expert_floats_;
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

// End-to-end token bytes to and from other ranks in one exchange.
void MoeLayer::count_bytes(bool reverse) {
    const int64_t d = config_.d_model, me = rank();
    const int64_t sent =
        reverse ? layout_.num_recv - layout_.recv_rows[me] : layout_.num_send - layout_.send_rows[me];
    const int64_t received =
        reverse ? layout_.num_send - layout_.send_rows[me] : layout_.num_recv - layout_.recv_rows[me];
    stats_.alltoallv_bytes_sent += sent * d * static_cast<int64_t>(sizeof(float));
    stats_.alltoallv_bytes_recv += received * d * static_cast<int64_t>(sizeof(float));
}

// The expert work on the rows from one source rank, block by block (local expert le, source src).
// Every schedule makes exactly these calls on exactly these blocks, so all schedules agree bit for
// bit. Forward: x rows in rows_.recv -> y rows in their place. Backward: dy rows -> dx rows in place.
void MoeLayer::compute_source(int src, bool backward_pass) {
    const int64_t d = config_.d_model, EL = num_local_experts_, me = rank();
    const ExpertShape shape{config_.d_model, config_.d_ff, config_.activation};
    for (int64_t le = 0; le < EL; ++le) {
        const int64_t rows = layout_.block_rows(static_cast<int>(me), le, src);
        if (rows == 0) continue;
        const int64_t begin = layout_.block_begin[le * num_ranks() + src];
        float* io = rows_.recv.data() + layout_.source_block_row[src * EL + le] * d;
        if (!backward_pass) {
            std::memcpy(rows_.expert_x.data() + begin * d, io, sizeof(float) * rows * d);
            experts_.forward(io, rows_.acts.at(begin), rows_.expert_x.data() + begin * d, expert_weights(le),
                             rows, shape);
        } else {
            std::memcpy(rows_.expert_dy.data() + begin * d, io, sizeof(float) * rows * d);
            experts_.backward_data(io, rows_.expert_dy.data() + begin * d, rows_.acts.at(begin),
                                   expert_weights(le), rows, shape);
        }
        stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
    }
}

// Rows of shadowed experts, computed here with the broadcast weights. Outputs land after the network
// rows of combine_recv (forward) or return_rows (backward), so combine reads every slot the same way.
void MoeLayer::compute_shadows(bool backward_pass) {
    const int64_t d = config_.d_model, n0 = layout_.num_send;
    const ExpertShape shape{config_.d_model, config_.d_ff, config_.activation};
    for (int i = 0; i < layout_.num_shadowed; ++i) {
        const int64_t begin = layout_.shadow_row_begin[i], rows = layout_.shadow_row_begin[i + 1] - begin;
        if (!backward_pass) {
            experts_.forward(rows_.combine_recv.data() + (n0 + begin) * d, shadow_.acts.at(begin),
                             shadow_.x.data() + begin * d, shadow_weights(i), rows, shape);
            stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
        } else {
            const float* dy = rows_.send.data() + (n0 + begin) * d;
            experts_.backward_data(rows_.return_rows.data() + (n0 + begin) * d, dy, shadow_.acts.at(begin),
                                   shadow_weights(i), rows, shape);
            std::fill(shadow_.grads.begin() + i * expert_floats_,
                      shadow_.grads.begin() + (i + 1) * expert_floats_, 0.0f);
            experts_.backward_weights(shadow_grads(i), dy, shadow_.x.data() + begin * d,
                                      shadow_.acts.at(begin), rows, shape);
            stats_.expert_flops += 2.0 * expert_ffn_forward_flops(rows, shape);
        }
    }
}

class MoeLayer::ExpertWork : public RoundTripWork {
   public:
    ExpertWork(MoeLayer& layer, bool backward_pass) : layer_(layer), backward_pass_(backward_pass) {}
    void compute_local() override { layer_.compute_shadows(backward_pass_); }
    void compute_source(int src) override { layer_.compute_source(src, backward_pass_); }

   private:
    MoeLayer& layer_;
    bool backward_pass_;
};

// rows_.send out to the owners, the expert blocks there, results back into combine_recv (forward) or
// return_rows (backward), in send order: one round trip through the schedule (schedule.h).
void MoeLayer::expert_round_trip(bool backward_pass, RoundTripTimes* times) {
    ExpertWork work(*this, backward_pass);
    float* results = backward_pass ? rows_.return_rows.data() : rows_.combine_recv.data();
    exchange_->round_trip(rows_.send.data(), rows_.recv.data(), results, layout_.rows.data(), work, times);
    stats_.alltoallv_s += times->exchange_s();
    stats_.bytes_intra_node += exchange_->last_bytes_intra_node();
    stats_.bytes_inter_node += exchange_->last_bytes_inter_node();
    count_bytes(false);
    count_bytes(true);
}

// ------------------------------------------------------------------------------------------------
// Backward

// Phases: combine = the combine's backward + waiting for the dy rows to arrive; expert = the expert blocks
// (data gradients during the round trip, then weight gradients once per expert, and the shadow gradient
// reduce); dispatch = waiting for the dx rows to come back + the pack's backward; route = the gate.
void MoeLayer::backward(float* dx, const float* dy) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model, k = config_.top_k;
    const int64_t P = num_ranks(), EL = num_local_experts_;
    const ExpertShape shape{config_.d_model, config_.d_ff, config_.activation};
    GateBuffers& g = gate_buffers_;

    const double t0 = now_s();
    // dL/dw = dy·out per kept slot; each expert gets w·dy as its output gradient.
    combine_backward(rows_.send.data(), g.dslot_weight.data(), dy, rows_.combine_recv.data(),
                     layout_.slot_row.data(), g.slot_weight.data(), T, k, d);
    const double t1 = now_s();
    RoundTripTimes times;
    expert_round_trip(true, &times);
    // Weight gradients once per expert over all its rows, in block order: the same GEMMs for every schedule.
    const double t2 = now_s();
    for (int64_t le = 0; le < EL; ++le) {
        const int64_t begin = layout_.expert_row_begin[le], rows = layout_.expert_row_begin[le + 1] - begin;
        experts_.backward_weights(expert_grads(le), rows_.expert_dy.data() + begin * d,
                                  rows_.expert_x.data() + begin * d, rows_.acts.at(begin), rows, shape);
        stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
    }
    reduce_shadow_grads();
    const double t3 = now_s();
    dispatch_pack_backward(dx, rows_.return_rows.data(), layout_.slot_row.data(), T, k, d);
    const double t4 = now_s();

    const double T_global = static_cast<double>(P * T);
    const GateLossGrads loss{g.aux_dprob.data(), config_.z_loss_coef * 2.0 / T_global};
    gate_backward(dx, grads_.router_w, grads_.router_noise_w, g.dlogits.data(), g.dnoise.data(),
                  g.dslot_weight.data(), gate_, gate_inputs_, loss, config_);
    const double t5 = now_s();
    stats_.phase_s[kBwdCombine] = (t1 - t0) + times.wait_in_s;
    stats_.phase_s[kBwdExpert] = times.compute_s + (t3 - t2);
    stats_.phase_s[kBwdDispatch] = times.wait_out_s + (t4 - t3);
    stats_.phase_s[kBwdRoute] = t5 - t4;
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
