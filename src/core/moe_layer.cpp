#include "moe_layer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

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

MoeLayer::MoeLayer(const LayerConfig& config, Comm& comm, ExpertCompute& experts, int layer_index)
    : config_(config), comm_(comm), experts_(experts), layer_index_(layer_index) {
    validate(config_, comm_.size());
    const int64_t P = comm_.size(), E = config_.num_experts, d = config_.d_model, f = config_.d_ff;
    const int64_t T = config_.tokens_per_rank, k = config_.top_k;
    num_local_experts_ = E / P;
    const int64_t EL = num_local_experts_;
    const bool noisy = config_.gate == GateKind::noisy_topk;
    const bool swiglu = config_.activation == Activation::swiglu;
    const bool bias = config_.expert_bias;

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
    gate_ = GateState{logits_.data(), probs_.data(),       lse_.data(),         noise_logits_.data(),
                      scores_.data(), slot_expert_.data(), slot_weight_.data(), slot_routed_.data()};
    prob_sum_.resize(E);
    aux_dprob_.resize(E);
    local_requested_.resize(E);
    expert_load_.resize(E);
    count_send_.resize(E + 2);
    count_recv_.resize(P * (E + 2));
    sum_send_.resize(E + 1);
    sum_recv_.resize(P * (E + 1));

    // Layout.
    handle_.requested.resize(P * E);
    handle_.allowed.resize(P * E);
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
    slot_row_.resize(T * k);
    if (capacity_needs_key_exchange(config_)) {
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
    max_recv_rows_ = P * T * k;
    if (config_.capacity_factor > 0) {
        const int64_t group_tokens = config_.capacity_scope == CapacityScope::local ? T : P * T;
        const int64_t capacity = capacity_per_expert(config_.capacity_factor, group_tokens, config_.top_k, E);
        const int64_t groups = config_.capacity_scope == CapacityScope::local ? P : 1;
        max_recv_rows_ = std::min(max_recv_rows_, EL * groups * capacity);
    }
    send_buf_.resize(T * k * d);
    combine_recv_.resize(T * k * d);
    recv_buf_.resize(max_recv_rows_ * d);
    expert_x_.resize(max_recv_rows_ * d);
    expert_y_.resize(max_recv_rows_ * d);
    expert_dx_.resize(max_recv_rows_ * d);
    act_h_.resize(max_recv_rows_ * f);
    act_g_.resize(swiglu ? max_recv_rows_ * f : 0);
    act_a_.resize(max_recv_rows_ * f);
    // Touch every page now: fresh pages fault on first write, which would land in the first steps.
    for (auto* buffer : {&send_buf_, &combine_recv_, &recv_buf_, &expert_x_, &expert_y_, &expert_dx_, &act_h_,
                         &act_g_, &act_a_})
        std::fill(buffer->begin(), buffer->end(), 0.0f);
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
                             act_a_.data() + row_begin * f};
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
    double t2 = now_s();
    stats_.phase_s[kFwdCountExchange] = t2 - t1;
    plan_layout();
    double t3 = now_s();
    stats_.phase_s[kFwdLayout] = t3 - t2;
    dispatch(x);
    double t4 = now_s();
    stats_.phase_s[kFwdDispatch] = t4 - t3;
    compute_experts();
    double t5 = now_s();
    stats_.phase_s[kFwdExpert] = t5 - t4;
    combine(y);
    stats_.phase_s[kFwdCombine] = now_s() - t5;
}

void MoeLayer::route(const float* x, int64_t step, uint64_t seed) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model;
    int64_t num_nonfinite = 0;
    for (int64_t i = 0; i < T * d; ++i) num_nonfinite += !std::isfinite(x[i]);
    gate_inputs_ = GateInputs{
        x, params_.router_w, params_.router_noise_w, router_bias_.data(), T, rank() * T, seed, step};
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
    std::copy(prob_sum_.begin(), prob_sum_.end(), sum_send_.begin());
    sum_send_[E] = sums.z_sum;
}

void MoeLayer::exchange_counts(int64_t step) {
    const int64_t P = num_ranks(), E = config_.num_experts, k = config_.top_k;
    comm_.allgather_i64(count_send_.data(), count_recv_.data(), E + 2);
    comm_.allgather_f64(sum_send_.data(), sum_recv_.data(), E + 1);
    for (int64_t r = 0; r < P; ++r) {
        const int64_t bad = count_recv_[r * (E + 2) + E + 1];
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
            handle_.requested[r * E + e] = count_recv_[r * (E + 2) + e];
            total += handle_.requested[r * E + e];
            prob_sum_[e] += sum_recv_[r * (E + 1) + e];
        }
        handle_.num_skipped += count_recv_[r * (E + 2) + E];
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

void MoeLayer::plan_layout() {
    const int64_t P = num_ranks(), E = config_.num_experts, T = config_.tokens_per_rank, k = config_.top_k;
    const int64_t EL = num_local_experts_, me = rank();
    // Routed assignments of this rank sorted by expert, stable in token order (counting sort).
    std::fill(expert_begin_.begin(), expert_begin_.end(), 0);
    for (int64_t s = 0; s < T * k; ++s)
        if (slot_routed_[s]) ++expert_begin_[slot_expert_[s] + 1];
    for (int64_t e = 0; e < E; ++e) expert_begin_[e + 1] += expert_begin_[e];
    std::copy(expert_begin_.begin(), expert_begin_.end() - 1, expert_fill_.begin());
    for (int64_t s = 0; s < T * k; ++s)
        if (slot_routed_[s]) by_expert_[expert_fill_[slot_expert_[s]]++] = s;

    handle_.capacity = capacity_of_step(config_, handle_.requested.data(), static_cast<int>(P));
    if (capacity_needs_key_exchange(config_)) {
        select_probs_global();
    } else {
        capacity_allowed_from_counts(handle_.allowed.data(), handle_.requested.data(), static_cast<int>(P),
                                     config_);
    }

    // Keep the first allowed[me][e] of each expert's assignments in policy order; send them in token order.
    std::fill(handle_.kept.begin(), handle_.kept.end(), 0);
    std::fill(slot_row_.begin(), slot_row_.end(), -1);
    int64_t row = 0;
    for (int64_t e = 0; e < E; ++e) {
        int64_t* segment = by_expert_.data() + expert_begin_[e];
        const int64_t count = expert_begin_[e + 1] - expert_begin_[e];
        const int64_t keep = handle_.allowed[me * E + e];
        EXPAR_ASSERT(keep <= count);
        if (config_.drop_policy == DropPolicy::probs && keep < count) {
            const float* w = slot_weight_.data();
            std::sort(segment, segment + count, [w](int64_t a, int64_t b) {
                if (w[a] != w[b]) return w[a] > w[b];
                return a < b;
            });
            std::sort(segment, segment + keep);
        }
        for (int64_t i = 0; i < keep; ++i) {
            handle_.kept[segment[i]] = 1;
            slot_row_[segment[i]] = row;
            handle_.send_slot[row++] = segment[i];
        }
    }
    handle_.num_send = row;
    // Row counts per peer: experts of rank r are [r·EL, (r+1)·EL).
    int64_t send_offset = 0, recv_offset = 0;
    for (int64_t r = 0; r < P; ++r) {
        int64_t to_r = 0, from_r = 0;
        for (int64_t le = 0; le < EL; ++le) {
            to_r += handle_.allowed[me * E + r * EL + le];
            from_r += handle_.allowed[r * E + me * EL + le];
        }
        handle_.send_rows[r] = to_r;
        handle_.send_offsets[r] = send_offset;
        handle_.recv_rows[r] = from_r;
        handle_.recv_offsets[r] = recv_offset;
        send_offset += to_r;
        recv_offset += from_r;
    }
    handle_.num_recv = recv_offset;
    EXPAR_ASSERT(send_offset == handle_.num_send);
    if (handle_.num_recv > max_recv_rows_)
        throw_error(__FILE__, __LINE__, "receive buffer too small for this step's load", false);
    expert_row_begin_[0] = 0;
    for (int64_t le = 0; le < EL; ++le) {
        int64_t rows = 0;
        for (int64_t r = 0; r < P; ++r) rows += handle_.allowed[r * E + me * EL + le];
        expert_row_begin_[le + 1] = expert_row_begin_[le] + rows;
    }
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

void MoeLayer::permute_source_to_expert(float* expert_major, const float* source_major) {
    const int64_t P = num_ranks(), E = config_.num_experts, d = config_.d_model, EL = num_local_experts_;
    const int64_t me = rank();
    std::copy(expert_row_begin_.begin(), expert_row_begin_.end() - 1, expert_fill_.begin());
    int64_t src_row = 0;
    for (int64_t r = 0; r < P; ++r)
        for (int64_t le = 0; le < EL; ++le) {
            const int64_t rows = handle_.allowed[r * E + me * EL + le];
            std::memcpy(expert_major + expert_fill_[le] * d, source_major + src_row * d,
                        sizeof(float) * rows * d);
            expert_fill_[le] += rows;
            src_row += rows;
        }
}

void MoeLayer::permute_expert_to_source(float* source_major, const float* expert_major) {
    const int64_t P = num_ranks(), E = config_.num_experts, d = config_.d_model, EL = num_local_experts_;
    const int64_t me = rank();
    std::copy(expert_row_begin_.begin(), expert_row_begin_.end() - 1, expert_fill_.begin());
    int64_t src_row = 0;
    for (int64_t r = 0; r < P; ++r)
        for (int64_t le = 0; le < EL; ++le) {
            const int64_t rows = handle_.allowed[r * E + me * EL + le];
            std::memcpy(source_major + src_row * d, expert_major + expert_fill_[le] * d,
                        sizeof(float) * rows * d);
            expert_fill_[le] += rows;
            src_row += rows;
        }
}

// forward_direction: sources -> owners (send layout to recv layout); otherwise owners -> sources.
void MoeLayer::timed_alltoallv(const float* send, float* recv, bool forward_direction) {
    const DispatchHandle& h = handle_;
    const int64_t d = config_.d_model, me = rank();
    const double t0 = now_s();
    if (forward_direction) {
        comm_.alltoallv_rows(send, h.send_rows.data(), h.send_offsets.data(), recv, h.recv_rows.data(),
                             h.recv_offsets.data(), d);
    } else {
        comm_.alltoallv_rows(send, h.recv_rows.data(), h.recv_offsets.data(), recv, h.send_rows.data(),
                             h.send_offsets.data(), d);
    }
    stats_.alltoallv_s += now_s() - t0;
    const int64_t sent = (forward_direction ? h.num_send - h.send_rows[me] : h.num_recv - h.recv_rows[me]);
    const int64_t received =
        (forward_direction ? h.num_recv - h.recv_rows[me] : h.num_send - h.send_rows[me]);
    stats_.alltoallv_bytes_sent += sent * d * static_cast<int64_t>(sizeof(float));
    stats_.alltoallv_bytes_recv += received * d * static_cast<int64_t>(sizeof(float));
}

void MoeLayer::dispatch(const float* x) {
    const int64_t d = config_.d_model, k = config_.top_k;
    for (int64_t row = 0; row < handle_.num_send; ++row) {
        const int64_t t = handle_.send_slot[row] / k;
        std::memcpy(send_buf_.data() + row * d, x + t * d, sizeof(float) * d);
    }
    timed_alltoallv(send_buf_.data(), recv_buf_.data(), true);
    permute_source_to_expert(expert_x_.data(), recv_buf_.data());
}

void MoeLayer::compute_experts() {
    const int64_t d = config_.d_model;
    const ExpertShape shape{config_.d_model, config_.d_ff, config_.activation};
    for (int64_t le = 0; le < num_local_experts_; ++le) {
        const int64_t begin = expert_row_begin_[le], rows = expert_row_begin_[le + 1] - begin;
        experts_.forward(expert_y_.data() + begin * d, expert_acts(begin), expert_x_.data() + begin * d,
                         expert_weights(le), rows, shape);
        stats_.expert_flops += expert_ffn_forward_flops(rows, shape);
    }
}

void MoeLayer::combine(float* y) {
    const int64_t T = config_.tokens_per_rank, d = config_.d_model, k = config_.top_k;
    permute_expert_to_source(recv_buf_.data(), expert_y_.data());
    timed_alltoallv(recv_buf_.data(), combine_recv_.data(), false);
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
    const int64_t P = num_ranks();
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
    timed_alltoallv(send_buf_.data(), recv_buf_.data(), true);
    permute_source_to_expert(expert_y_.data(), recv_buf_.data());
    double t1 = now_s();
    stats_.phase_s[kBwdCombine] = t1 - t0;

    for (int64_t le = 0; le < num_local_experts_; ++le) {
        const int64_t begin = expert_row_begin_[le], rows = expert_row_begin_[le + 1] - begin;
        experts_.backward(expert_dx_.data() + begin * d, expert_grads(le), expert_y_.data() + begin * d,
                          expert_x_.data() + begin * d, expert_acts(begin), expert_weights(le), rows, shape);
        stats_.expert_flops += 2.0 * expert_ffn_forward_flops(rows, shape);
    }
    double t2 = now_s();
    stats_.phase_s[kBwdExpert] = t2 - t1;

    permute_expert_to_source(recv_buf_.data(), expert_dx_.data());
    timed_alltoallv(recv_buf_.data(), send_buf_.data(), false);
    std::fill(dx, dx + T * d, 0.0f);
    for (int64_t row = 0; row < handle_.num_send; ++row) {
        const int64_t t = handle_.send_slot[row] / k;
        const float* g = send_buf_.data() + row * d;
        float* out = dx + t * d;
        for (int64_t i = 0; i < d; ++i) out[i] += g[i];
    }
    double t3 = now_s();
    stats_.phase_s[kBwdDispatch] = t3 - t2;

    const double T_global = static_cast<double>(P * T);
    const GateLossGrads loss{aux_dprob_.data(), config_.z_loss_coef * 2.0 / T_global};
    gate_backward(dx, grads_.router_w, grads_.router_noise_w, dlogits_.data(), dnoise_.data(),
                  dslot_weight_.data(), gate_, gate_inputs_, loss, config_);
    stats_.phase_s[kBwdRoute] = now_s() - t3;
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
