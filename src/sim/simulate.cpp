#include "simulate.h"

#include <algorithm>

#include "check.h"
#include "timer.h"

namespace expar {

void layer_work_from_routing(LayerWork* work,
                             std::vector<int64_t>* shadow_rows,
                             const RoutingStep& decisions,
                             const Workload& workload,
                             bool backward) {
    const ModelSpec& m = workload.model;
    const int P = decisions.num_ranks;
    const int64_t E = decisions.num_experts, EL = decisions.num_local_experts, T = decisions.tokens_per_rank;
    const double expert_flops = expert_forward_flops_per_token(m);
    work->num_ranks = P;
    work->rows = decisions.rows.data();
    work->bytes_per_row = token_bytes(workload);
    work->flops_per_row = expert_flops;
    work->block_flops = nullptr;
    // Router and shared experts: every rank's own tokens, before the dispatch (the "route" phase).
    work->route_flops =
        static_cast<double>(T) * (moe_layer_forward_flops_per_token(m) - m.top_k * expert_flops);
    work->router_flops =
        static_cast<double>(T) * 2.0 * static_cast<double>(m.d_model) * static_cast<double>(E);
    work->count_bytes = static_cast<double>(E) * sizeof(int64_t);
    work->expert_param_bytes = static_cast<double>(expert_num_params(m)) * workload.dtype_bytes;
    work->backward = backward;
    work->shadow_owner.clear();
    shadow_rows->assign(P, 0);
    for (int64_t e = 0; e < E; ++e) {
        if (!decisions.shadowed[e]) continue;
        work->shadow_owner.push_back(static_cast<int>(e / EL));
        for (int r = 0; r < P; ++r) (*shadow_rows)[r] += decisions.shadow_tokens(r, e);
    }
    work->shadow_rows = work->shadow_owner.empty() ? nullptr : shadow_rows->data();
}

SimulateRun simulate_layer_steps(const SimulateSpec& spec) {
    const double t0 = now_s();
    const int P = spec.num_ranks;
    const int64_t S = spec.num_steps, E = spec.layer.num_experts;
    EXPAR_REQUIRE(S > 0, "--steps must be positive (got " << S << ")");
    EXPAR_REQUIRE(spec.rank_detail_limit >= 0, "--rank-detail-limit must be >= 0");
    const Network network(spec.topology, sim_node_map(spec.topology, P), spec.nic_model, spec.precision);
    const LayerCluster cluster = routing_cluster(spec.topology, P, spec.precision);
    RoutingModel routing(spec.routing, spec.layer, cluster, shadow_cost_model(spec.workload, cluster));
    RoutingStep decisions = routing.make_step();
    const ScheduleSpec schedule{spec.layer.schedule, effective_group_size(spec.layer, P), spec.aggregation};

    SimulateRun run;
    run.num_ranks = P;
    run.num_experts = E;
    run.num_steps = S;
    run.has_rank_detail = P <= spec.rank_detail_limit;
    run.step.resize(S);
    run.phase_s.resize(S * kNumSimPhases);
    run.phase_rank.resize(S * kNumSimPhases);
    run.step_s.resize(S);
    run.bound_s.resize(S);
    run.efficiency.resize(S);
    run.bound_terms_s.resize(S * kNumBoundTerms);
    run.requested.resize(S);
    run.dropped.resize(S);
    run.redirected.resize(S);
    run.shadowed.resize(S);
    run.capacity.resize(S);
    run.link_bytes.resize(S * kNumLinkClasses);
    run.busiest_link_class.resize(S);
    run.busiest_link_utilisation.resize(S);
    run.num_events.resize(S);
    run.sim_wall_s.resize(S);
    if (run.has_rank_detail) {
        run.rank_phase_s.resize(S * P * kNumSimPhases);
        run.rank_end_s.resize(S * P);
        run.requested_counts.resize(S * P * E);
        run.allowed_counts.resize(S * P * E);
    }

    LayerWork work;
    std::vector<int64_t> shadow_rows;
    for (int64_t s = 0; s < S; ++s) {
        const double step_t0 = now_s();
        routing.step(s, &decisions);
        layer_work_from_routing(&work, &shadow_rows, decisions, spec.workload, spec.backward);
        const LayerPrediction p = predict_layer(network, work, schedule, spec.sim);
        run.aggregated = run.aggregated || p.aggregated;

        run.step[s] = s;
        for (int phase = 0; phase < kNumSimPhases; ++phase) {
            double largest = p.phase_s[phase];
            for (int r = 1; r < P; ++r) largest = std::max(largest, p.phase_s[r * kNumSimPhases + phase]);
            // The lowest rank within rounding of the max: ranks whose phases differ in the last bits of
            // their sums are tied, as they are in the log's µs.
            int lowest = 0;
            while (p.phase_s[lowest * kNumSimPhases + phase] < largest * (1 - 1e-12)) ++lowest;
            run.phase_s[s * kNumSimPhases + phase] = largest;
            run.phase_rank[s * kNumSimPhases + phase] = lowest;
        }
        run.step_s[s] = p.step_s;
        run.bound_s[s] = p.bound.total_s;
        run.efficiency[s] = p.efficiency;
        const double terms[kNumBoundTerms] = {p.bound.nic_send_s, p.bound.nic_recv_s, p.bound.intra_s,
                                              p.bound.core_s,     p.bound.compute_s,  p.bound.latency_s};
        std::copy(terms, terms + kNumBoundTerms, run.bound_terms_s.begin() + s * kNumBoundTerms);
        run.requested[s] = decisions.num_requested;
        run.dropped[s] = decisions.num_dropped();
        run.redirected[s] = decisions.num_redirected;
        run.shadowed[s] = decisions.num_shadowed;
        run.capacity[s] = decisions.capacity;
        std::copy(p.sim.class_bytes, p.sim.class_bytes + kNumLinkClasses,
                  run.link_bytes.begin() + s * kNumLinkClasses);
        run.busiest_link_class[s] = p.sim.busiest_link >= 0
                                        ? static_cast<int64_t>(network.links()[p.sim.busiest_link].link_class)
                                        : -1;
        run.busiest_link_utilisation[s] = p.sim.busiest_link_utilisation;
        run.num_events[s] = p.sim.num_events;
        if (run.has_rank_detail) {
            std::copy(p.phase_s.begin(), p.phase_s.end(), run.rank_phase_s.begin() + s * P * kNumSimPhases);
            std::copy(p.rank_end_s.begin(), p.rank_end_s.end(), run.rank_end_s.begin() + s * P);
            std::copy(decisions.requested.begin(), decisions.requested.end(),
                      run.requested_counts.begin() + s * P * E);
            std::copy(decisions.allowed.begin(), decisions.allowed.end(),
                      run.allowed_counts.begin() + s * P * E);
        }
        run.sim_wall_s[s] = now_s() - step_t0;
    }
    run.wall_s = now_s() - t0;
    run.peak_rss_bytes = peak_rss_bytes();
    return run;
}

}  // namespace expar
