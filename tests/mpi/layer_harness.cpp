#include "layer_harness.h"

#include <cmath>

#include "rng.h"
#include "synthetic.h"

namespace expar::test {

void make_global_inputs(const LayerConfig& c,
                        int64_t global_tokens,
                        uint64_t seed,
                        int64_t step,
                        std::vector<float>* x,
                        std::vector<float>* dy) {
    x->resize(global_tokens * c.d_model);
    dy->resize(global_tokens * c.d_model);
    synthetic_rows(x->data(), seed, kStreamTokens, step, 0, global_tokens, c.d_model);
    synthetic_rows(dy->data(), seed, kStreamUpstreamGrad, step, 0, global_tokens, c.d_model);
}

void load_params(MoeLayer& layer, const ReferenceParams<float>& p) {
    const LayerConfig& c = layer.config();
    const int64_t d = c.d_model, f = c.d_ff, E = c.num_experts, EL = layer.num_local_experts();
    const int64_t first = layer.rank() * EL;
    const LayerTensors t = layer.params();
    std::copy(p.router_w.begin(), p.router_w.end(), t.router_w);
    if (t.router_noise_w) std::copy(p.router_noise_w.begin(), p.router_noise_w.end(), t.router_noise_w);
    auto slice = [&](const std::vector<float>& global, float* local, int64_t per_expert) {
        if (local)
            std::copy(global.begin() + first * per_expert, global.begin() + (first + EL) * per_expert, local);
    };
    slice(p.w1, t.w1, d * f);
    slice(p.b1, t.b1, f);
    slice(p.w2, t.w2, f * d);
    slice(p.b2, t.b2, d);
    slice(p.w3, t.w3, d * f);
    (void)E;
}

GlobalResult run_distributed(const LayerConfig& config,
                             MPI_Comm mpi_comm,
                             uint64_t seed,
                             int64_t step,
                             ExpertCompute* experts,
                             const LayerCluster* cluster,
                             const float* selection_bias) {
    MpiComm comm(mpi_comm);
    const int P = comm.size(), rank = comm.rank();
    const int64_t T_local = config.tokens_per_rank, T = P * T_local, d = config.d_model, k = config.top_k;
    const int64_t E = config.num_experts, f = config.d_ff;
    BlasExpertCompute blas;
    MoeLayer layer(config, comm, experts ? *experts : blas, 0, cluster);
    if (selection_bias) layer.set_selection_bias(selection_bias);
    const ReferenceParams<float> params = reference_params_init<float>(config, seed);
    load_params(layer, params);
    std::vector<float> x, dy;
    make_global_inputs(config, T, seed, step, &x, &dy);
    std::vector<float> y(T_local * d), dx(T_local * d);
    layer.zero_grads();
    layer.forward(y.data(), x.data() + rank * T_local * d, step, seed);
    layer.backward(dx.data(), dy.data() + rank * T_local * d);
    layer.allreduce_router_grads();

    GlobalResult out;
    const bool root = rank == 0;
    auto gather = [&](const float* local, int64_t count, std::vector<float>* global) {
        global->resize(root ? count * P : 0);
        comm.gatherv_f32(local, count, global->data(), 0);
    };
    gather(y.data(), T_local * d, &out.y);
    gather(dx.data(), T_local * d, &out.dx);
    std::vector<float> experts_f(T_local * k), experts_global;
    for (int64_t s = 0; s < T_local * k; ++s)
        experts_f[s] = layer.layout().kept[s] ? static_cast<float>(layer.gate_state().expert[s]) : -1.0f;
    gather(experts_f.data(), T_local * k, &experts_global);
    out.expert.assign(experts_global.begin(), experts_global.end());
    gather(layer.gate_state().weight, T_local * k, &out.weight);
    const LayerTensors g = layer.grads();
    const int64_t EL = layer.num_local_experts();
    gather(g.w1, EL * d * f, &out.grad.w1);
    gather(g.w2, EL * f * d, &out.grad.w2);
    if (g.b1) gather(g.b1, EL * f, &out.grad.b1);
    if (g.b2) gather(g.b2, EL * d, &out.grad.b2);
    if (g.w3) gather(g.w3, EL * d * f, &out.grad.w3);
    out.grad.router_w.assign(g.router_w, g.router_w + d * E);
    if (g.router_noise_w) out.grad.router_noise_w.assign(g.router_noise_w, g.router_noise_w + d * E);
    out.requested.assign(E, 0);
    out.received.assign(E, 0);
    for (int r = 0; r < P; ++r)
        for (int64_t e = 0; e < E; ++e) {
            out.requested[e] += layer.layout().requested[r * E + e];
            out.received[e] += layer.layout().allowed[r * E + e];
        }
    out.aux = layer.stats().aux_loss;
    out.z = layer.stats().z_loss;
    out.num_redirected = layer.stats().num_redirected_global;
    out.num_shadowed = layer.stats().num_shadowed;
    return out;
}

std::vector<float> all_grads(const GlobalResult& r) {
    std::vector<float> all;
    for (const auto* v : {&r.grad.router_w, &r.grad.router_noise_w, &r.grad.w1, &r.grad.b1, &r.grad.w2,
                          &r.grad.b2, &r.grad.w3})
        all.insert(all.end(), v->begin(), v->end());
    return all;
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        norm += static_cast<double>(b[i]) * b[i];
    }
    if (norm == 0) return diff == 0 ? 0 : INFINITY;
    return std::sqrt(diff / norm);
}

}  // namespace expar::test
