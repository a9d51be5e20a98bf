#include "layer_io.h"

#include <algorithm>

#include "blas.h"
#include "check.h"
#include "git_revision.h"
#include "rng.h"

namespace expar {

namespace {

// Assignments to expert e summed over source ranks: counts[src * E + e] (DispatchLayout's requested or
// allowed).
int64_t expert_total(const std::vector<int64_t>& counts, int num_ranks, int64_t E, int64_t e) {
    int64_t total = 0;
    for (int r = 0; r < num_ranks; ++r) total += counts[r * E + e];
    return total;
}

}  // namespace

std::unique_ptr<H5File> create_on_root(Comm& comm, const std::string& path, const std::string& what) {
    std::unique_ptr<H5File> file;
    int64_t failed = 0;
    if (comm.rank() == 0) {
        try {
            file = std::make_unique<H5File>(path, Staged{what});
        } catch (const Error&) {
            failed = 1;
        }
    }
    comm.allreduce_max_i64(&failed, 1);
    if (failed)
        EXPAR_FAIL("cannot create HDF5 file '" << path
                                               << "' (check that its directory exists and is writable)");
    return file;
}

void commit_on_root(Comm& comm, H5File* file) {
    comm.barrier();
    if (file) file->commit();
}

void write_common_attributes(H5File& file, const Attributes& options, int num_ranks) {
    for (const auto& [key, value] : options) file.attr(key, value);
    file.attr("git_revision", std::string(EXPAR_GIT_REVISION));
    file.attr("num_ranks", static_cast<int64_t>(num_ranks));
    file.attr("blas", blas_description());
}

struct LayerLog::Row {
    int64_t step;
    const MoeLayer& layer;
    double step_time_s;  // this rank's
    double tokens_per_s;
};

namespace {

// The log's datasets (docs/hdf5.md, "The log"). Per-rank fields come from each rank's layer stats; the
// others from rank 0's, whose dispatch layout holds every rank's counts.
std::vector<H5LogField<LayerLog::Row>> layer_log_fields(int P, int64_t E) {
    using Row = LayerLog::Row;
    const hsize_t E_ = static_cast<hsize_t>(E);
    // Assignments summed over all experts and source ranks: counts = requested or allowed.
    auto all_experts = [P, E](const std::vector<int64_t>& counts) {
        int64_t sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += expert_total(counts, P, E, e);
        return sum;
    };
    return {
        {"/steps/step", {}, "", [](const Row& r, int64_t* v) { *v = r.step; }},
        {kPerRank,
         "/steps/phase_time_us",
         {kNumPhases},
         "us",
         [](const Row& r, double* v) {
             for (int p = 0; p < kNumPhases; ++p) v[p] = r.layer.stats().phase_s[p] * 1e6;
         },
         {{"phases", enum_name_csv<Phase>()}, {"simulated_phases", simulated_phase_names()}}},
        {kPerRank,
         "/steps/step_time_us",
         {},
         "us",
         [](const Row& r, double* v) { *v = r.step_time_s * 1e6; }},
        {kPerRank,
         "/steps/alltoallv_time_us",
         {},
         "us",
         [](const Row& r, double* v) { *v = r.layer.stats().alltoallv_s * 1e6; }},
        {kPerRank,
         "/steps/alltoallv_bytes_sent",
         {},
         "bytes",
         [](const Row& r, double* v) { *v = static_cast<double>(r.layer.stats().alltoallv_bytes_sent); }},
        {"/steps/tokens_per_s", {}, "tokens/s", [](const Row& r, double* v) { *v = r.tokens_per_s; }},
        {"/steps/aux_loss", {}, "1", [](const Row& r, double* v) { *v = r.layer.stats().aux_loss; }},
        {"/steps/z_loss", {}, "1", [](const Row& r, double* v) { *v = r.layer.stats().z_loss; }},
        {"/steps/capacity",
         {},
         "tokens per expert per scope group",
         [](const Row& r, int64_t* v) { *v = r.layer.layout().capacity; }},
        {"/steps/dropped_fraction",
         {},
         "fraction of routed assignments",
         [all_experts](const Row& r, double* v) {
             const DispatchLayout& h = r.layer.layout();
             const int64_t requested = all_experts(h.requested), dropped = requested - all_experts(h.allowed);
             *v = requested ? static_cast<double>(dropped) / requested : 0.0;
         }},
        {"/experts/requested",
         {E_},
         "tokens",
         [P, E](const Row& r, int64_t* v) {
             for (int64_t e = 0; e < E; ++e) v[e] = expert_total(r.layer.layout().requested, P, E, e);
         }},
        {"/experts/received",
         {E_},
         "tokens",
         [P, E](const Row& r, int64_t* v) {
             for (int64_t e = 0; e < E; ++e) v[e] = expert_total(r.layer.layout().allowed, P, E, e);
         }},
        {"/experts/dropped",
         {E_},
         "tokens",
         [P, E](const Row& r, int64_t* v) {
             const DispatchLayout& h = r.layer.layout();
             for (int64_t e = 0; e < E; ++e)
                 v[e] = expert_total(h.requested, P, E, e) - expert_total(h.allowed, P, E, e);
         }},
        {"/steps/schedule",
         {},
         "index into the names attribute",
         [](const Row& r, int64_t* v) { *v = static_cast<int64_t>(r.layer.config().schedule); },
         {{"names", "plain,pairwise,hierarchical"}}},
        {kPerRank,
         "/steps/redirected",
         {},
         "assignments moved on-node per rank",
         [](const Row& r, int64_t* v) { *v = r.layer.stats().num_redirected; }},
        {"/experts/shadowed",
         {E_},
         "1 if replicated this step",
         [E](const Row& r, int64_t* v) {
             for (int64_t e = 0; e < E; ++e) v[e] = r.layer.layout().shadowed[e];
         }},
        {kPerRank,
         "/steps/bytes_intra_node",
         {},
         "bytes sent per rank",
         [](const Row& r, int64_t* v) { *v = r.layer.stats().bytes_intra_node; }},
        {kPerRank,
         "/steps/bytes_inter_node",
         {},
         "bytes sent per rank",
         [](const Row& r, int64_t* v) { *v = r.layer.stats().bytes_inter_node; }},
    };
}

}  // namespace

LayerLog::LayerLog(Comm& comm,
                   const std::string& path,
                   const Attributes& options,
                   const LayerConfig& config) {
    file_ = create_on_root(comm, path, "--log");
    if (file_) write_common_attributes(*file_, options, comm.size());
    table_ = std::make_unique<H5LogTable<Row>>(file_.get(), layer_log_fields(comm.size(), config.num_experts),
                                               &comm);
    if (file_) file_->flush();
}

LayerLog::~LayerLog() {
    table_.reset();
    file_.reset();
}

void LayerLog::append(int64_t step, const MoeLayer& layer, double step_time_s, double tokens_per_s) {
    table_->append(Row{step, layer, step_time_s, tokens_per_s});
}

void LayerLog::flush() {
    if (file_) file_->flush();
}

void LayerLog::commit(Comm& comm) {
    table_.reset();
    commit_on_root(comm, file_.get());
}

void write_layer_dump(Comm& comm,
                      const std::string& path,
                      const Attributes& options,
                      const MoeLayer& layer,
                      const float* x,
                      const float* dy,
                      const float* y,
                      const float* dx,
                      uint64_t seed,
                      int64_t step) {
    const LayerConfig& c = layer.config();
    const int P = comm.size();
    const bool root = comm.rank() == 0;
    const int64_t T_local = c.tokens_per_rank, T = P * T_local, d = c.d_model, f = c.d_ff, E = c.num_experts;
    const int64_t k = c.top_k, EL = layer.num_local_experts();
    const hsize_t T_ = T, d_ = d, f_ = f, E_ = E, k_ = k;
    std::unique_ptr<H5File> file = create_on_root(comm, path, "--dump");
    std::vector<float> global(root ? std::max({T * d, E * d * f, T * E}) : 0);

    auto gather_write = [&](const std::string& name, const float* local, int64_t count,
                            const std::vector<hsize_t>& dims) {
        comm.gatherv_f32(local, count, global.data(), 0);
        if (root) file->write(name, dims, global.data());
    };
    gather_write("/x", x, T_local * d, {T_, d_});
    gather_write("/dy", dy, T_local * d, {T_, d_});
    gather_write("/y", y, T_local * d, {T_, d_});
    gather_write("/grad/x", dx, T_local * d, {T_, d_});

    // Routing: expert index per slot (-1 where dropped or not routed) and the gate weight.
    const GateState& g = layer.gate_state();
    const DispatchLayout& h = layer.layout();
    std::vector<float> routing(T_local * k);
    for (int64_t s = 0; s < T_local * k; ++s)
        routing[s] = h.kept[s] ? static_cast<float>(g.expert[s]) : -1.0f;
    comm.gatherv_f32(routing.data(), T_local * k, global.data(), 0);
    if (root) {
        std::vector<int32_t> experts(T * k);
        for (int64_t s = 0; s < T * k; ++s) experts[s] = static_cast<int32_t>(global[s]);
        file->write("/routing/expert", {T_, k_}, experts.data());
    }
    gather_write("/routing/weight", g.weight, T_local * k, {T_, k_});

    const LayerTensors params = layer.params(), grads = layer.grads();
    if (root) {
        const double aux = layer.stats().aux_loss, z = layer.stats().z_loss;
        file->write("/loss/aux", {}, &aux);
        file->write("/loss/z", {}, &z);
        file->write("/router/w", {d_, E_}, params.router_w);
        file->write("/router/bias", {E_}, layer.router_bias());
        file->write("/grad/router/w", {d_, E_}, grads.router_w);
        if (params.router_noise_w) {
            file->write("/router/w_noise", {d_, E_}, params.router_noise_w);
            file->write("/grad/router/w_noise", {d_, E_}, grads.router_noise_w);
            const uint64_t stream = rng_per_step(kStreamGateNoise, step);
            for (int64_t i = 0; i < T * E; ++i)
                global[i] = rng_normal(seed, stream, static_cast<uint64_t>(i));
            file->write("/router/noise_eps", {T_, E_}, global.data());
        }
    }
    struct Named {
        const char* name;
        const float* value;
        const float* grad;
        int64_t per_expert;
        std::vector<hsize_t> dims;
    };
    const Named experts[] = {{"w1", params.w1, grads.w1, d * f, {E_, d_, f_}},
                             {"b1", params.b1, grads.b1, f, {E_, f_}},
                             {"w2", params.w2, grads.w2, f * d, {E_, f_, d_}},
                             {"b2", params.b2, grads.b2, d, {E_, d_}},
                             {"w3", params.w3, grads.w3, d * f, {E_, d_, f_}}};
    for (const Named& tensor : experts) {
        if (tensor.value == nullptr) continue;
        gather_write(std::string("/experts/") + tensor.name, tensor.value, EL * tensor.per_expert,
                     tensor.dims);
        gather_write(std::string("/grad/experts/") + tensor.name, tensor.grad, EL * tensor.per_expert,
                     tensor.dims);
    }
    if (root) {
        write_common_attributes(*file, options, P);  // includes the seed, as an option
        file->attr("step", step);
    }
    // A dump is one step's snapshot, complete in itself: it replaces the old one as soon as it is written.
    commit_on_root(comm, file.get());
}

}  // namespace expar
