#include "layer_io.h"

#include <algorithm>

#include "blas.h"
#include "check.h"
#include "git_revision.h"
#include "rng.h"

namespace expar {

namespace {

enum TableIndex {
    kStep,
    kPhaseUs,
    kStepUs,
    kA2aUs,
    kA2aBytes,
    kTokensPerS,
    kAux,
    kZ,
    kCapacity,
    kDropFraction,
    kRequested,
    kReceived,
    kDropped,
    kSchedule,
    kRedirected,
    kShadowed,
    kBytesIntra,
    kBytesInter,
    kNumTables
};

// Per-rank values gathered each step, after the phase times.
enum RankValue {
    kRankStepUs,
    kRankA2aUs,
    kRankA2aBytes,
    kRankRedirected,
    kRankBytesIntra,
    kRankBytesInter,
    kNumRankValues
};

}  // namespace

std::unique_ptr<H5File> create_on_root(Comm& comm, const std::string& path) {
    std::unique_ptr<H5File> file;
    int64_t failed = 0;
    if (comm.rank() == 0) {
        try {
            file = std::make_unique<H5File>(path);
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

void write_common_attributes(H5File& file, const Attributes& options, int num_ranks) {
    for (const auto& [key, value] : options) file.attr(key, value);
    file.attr("git_revision", std::string(EXPAR_GIT_REVISION));
    file.attr("num_ranks", static_cast<int64_t>(num_ranks));
    file.attr("blas", blas_description());
}

LayerLog::LayerLog(Comm& comm, const std::string& path, const Attributes& options, const LayerConfig& config)
    : comm_(comm), num_experts_(config.num_experts) {
    const int P = comm_.size();
    const int64_t E = num_experts_;
    rank_row_.resize(kNumPhases + kNumRankValues);
    all_rows_.resize(comm_.rank() == 0 ? P * rank_row_.size() : 0);
    phase_us_.resize(P * kNumPhases);
    a2a_us_.resize(P);
    a2a_bytes_.resize(P);
    step_us_.resize(P);
    requested_.resize(E);
    received_.resize(E);
    dropped_.resize(E);
    redirected_.resize(P);
    bytes_intra_.resize(P);
    bytes_inter_.resize(P);
    shadowed_.resize(E);
    file_ = create_on_root(comm_, path);
    if (comm_.rank() != 0) return;
    write_common_attributes(*file_, options, P);
    std::string phases;
    for (int p = 0; p < kNumPhases; ++p)
        phases += std::string(p ? "," : "") + phase_name(static_cast<Phase>(p));
    const hsize_t P_ = static_cast<hsize_t>(P), E_ = static_cast<hsize_t>(E);
    tables_.resize(kNumTables);
    tables_[kStep] =
        std::make_unique<H5Table>(*file_, "/steps/step", std::vector<hsize_t>{}, H5T_NATIVE_INT64, "");
    tables_[kPhaseUs] = std::make_unique<H5Table>(
        *file_, "/steps/phase_time_us", std::vector<hsize_t>{P_, kNumPhases}, H5T_NATIVE_DOUBLE, "us");
    file_->attr("phases", phases, "/steps/phase_time_us");
    tables_[kStepUs] = std::make_unique<H5Table>(*file_, "/steps/step_time_us", std::vector<hsize_t>{P_},
                                                 H5T_NATIVE_DOUBLE, "us");
    tables_[kA2aUs] = std::make_unique<H5Table>(*file_, "/steps/alltoallv_time_us", std::vector<hsize_t>{P_},
                                                H5T_NATIVE_DOUBLE, "us");
    tables_[kA2aBytes] = std::make_unique<H5Table>(*file_, "/steps/alltoallv_bytes_sent",
                                                   std::vector<hsize_t>{P_}, H5T_NATIVE_DOUBLE, "bytes");
    tables_[kTokensPerS] = std::make_unique<H5Table>(*file_, "/steps/tokens_per_s", std::vector<hsize_t>{},
                                                     H5T_NATIVE_DOUBLE, "tokens/s");
    tables_[kAux] =
        std::make_unique<H5Table>(*file_, "/steps/aux_loss", std::vector<hsize_t>{}, H5T_NATIVE_DOUBLE, "1");
    tables_[kZ] =
        std::make_unique<H5Table>(*file_, "/steps/z_loss", std::vector<hsize_t>{}, H5T_NATIVE_DOUBLE, "1");
    tables_[kCapacity] = std::make_unique<H5Table>(*file_, "/steps/capacity", std::vector<hsize_t>{},
                                                   H5T_NATIVE_INT64, "tokens per expert per scope group");
    tables_[kDropFraction] =
        std::make_unique<H5Table>(*file_, "/steps/dropped_fraction", std::vector<hsize_t>{},
                                  H5T_NATIVE_DOUBLE, "fraction of routed assignments");
    tables_[kRequested] = std::make_unique<H5Table>(*file_, "/experts/requested", std::vector<hsize_t>{E_},
                                                    H5T_NATIVE_INT64, "tokens");
    tables_[kReceived] = std::make_unique<H5Table>(*file_, "/experts/received", std::vector<hsize_t>{E_},
                                                   H5T_NATIVE_INT64, "tokens");
    tables_[kDropped] = std::make_unique<H5Table>(*file_, "/experts/dropped", std::vector<hsize_t>{E_},
                                                  H5T_NATIVE_INT64, "tokens");
    tables_[kSchedule] = std::make_unique<H5Table>(*file_, "/steps/schedule", std::vector<hsize_t>{},
                                                   H5T_NATIVE_INT64, "index into the names attribute");
    file_->attr("names", std::string("plain,pairwise,hierarchical"), "/steps/schedule");
    tables_[kRedirected] = std::make_unique<H5Table>(*file_, "/steps/redirected", std::vector<hsize_t>{P_},
                                                     H5T_NATIVE_INT64, "assignments moved on-node per rank");
    tables_[kShadowed] = std::make_unique<H5Table>(*file_, "/experts/shadowed", std::vector<hsize_t>{E_},
                                                   H5T_NATIVE_INT64, "1 if replicated this step");
    tables_[kBytesIntra] = std::make_unique<H5Table>(
        *file_, "/steps/bytes_intra_node", std::vector<hsize_t>{P_}, H5T_NATIVE_INT64, "bytes sent per rank");
    tables_[kBytesInter] = std::make_unique<H5Table>(
        *file_, "/steps/bytes_inter_node", std::vector<hsize_t>{P_}, H5T_NATIVE_INT64, "bytes sent per rank");
    file_->flush();
}

LayerLog::~LayerLog() {
    tables_.clear();
    file_.reset();
}

void LayerLog::append(int64_t step, const MoeLayer& layer, double step_time_s, double tokens_per_s) {
    const LayerStepStats& stats = layer.stats();
    const int P = comm_.size();
    const size_t width = rank_row_.size();
    for (int p = 0; p < kNumPhases; ++p) rank_row_[p] = stats.phase_s[p] * 1e6;
    rank_row_[kNumPhases + kRankStepUs] = step_time_s * 1e6;
    rank_row_[kNumPhases + kRankA2aUs] = stats.alltoallv_s * 1e6;
    rank_row_[kNumPhases + kRankA2aBytes] = static_cast<double>(stats.alltoallv_bytes_sent);
    // Counts travel as doubles: exact below 2^53.
    rank_row_[kNumPhases + kRankRedirected] = static_cast<double>(stats.num_redirected);
    rank_row_[kNumPhases + kRankBytesIntra] = static_cast<double>(stats.bytes_intra_node);
    rank_row_[kNumPhases + kRankBytesInter] = static_cast<double>(stats.bytes_inter_node);
    comm_.gather_f64(rank_row_.data(), all_rows_.data(), static_cast<int64_t>(width), 0);
    if (comm_.rank() != 0) return;

    const DispatchLayout& h = layer.layout();
    const int64_t E = num_experts_;
    int64_t total_requested = 0, total_dropped = 0;
    for (int64_t e = 0; e < E; ++e) {
        requested_[e] = received_[e] = 0;
        for (int r = 0; r < P; ++r) {
            requested_[e] += h.requested[r * E + e];
            received_[e] += h.allowed[r * E + e];
        }
        dropped_[e] = requested_[e] - received_[e];
        total_requested += requested_[e];
        total_dropped += dropped_[e];
    }
    for (int r = 0; r < P; ++r) {
        for (int p = 0; p < kNumPhases; ++p) phase_us_[r * kNumPhases + p] = all_rows_[r * width + p];
        const double* row = all_rows_.data() + r * width + kNumPhases;
        step_us_[r] = row[kRankStepUs];
        a2a_us_[r] = row[kRankA2aUs];
        a2a_bytes_[r] = row[kRankA2aBytes];
        redirected_[r] = static_cast<int64_t>(row[kRankRedirected]);
        bytes_intra_[r] = static_cast<int64_t>(row[kRankBytesIntra]);
        bytes_inter_[r] = static_cast<int64_t>(row[kRankBytesInter]);
    }
    for (int64_t e = 0; e < E; ++e) shadowed_[e] = h.shadowed[e];
    const int64_t schedule = static_cast<int64_t>(layer.config().schedule);
    const double drop_fraction = total_requested ? static_cast<double>(total_dropped) / total_requested : 0.0;
    tables_[kStep]->append(&step);
    tables_[kPhaseUs]->append(phase_us_.data());
    tables_[kStepUs]->append(step_us_.data());
    tables_[kA2aUs]->append(a2a_us_.data());
    tables_[kA2aBytes]->append(a2a_bytes_.data());
    tables_[kTokensPerS]->append(&tokens_per_s);
    tables_[kSchedule]->append(&schedule);
    tables_[kRedirected]->append(redirected_.data());
    tables_[kShadowed]->append(shadowed_.data());
    tables_[kBytesIntra]->append(bytes_intra_.data());
    tables_[kBytesInter]->append(bytes_inter_.data());
    tables_[kAux]->append(&stats.aux_loss);
    tables_[kZ]->append(&stats.z_loss);
    tables_[kCapacity]->append(&h.capacity);
    tables_[kDropFraction]->append(&drop_fraction);
    tables_[kRequested]->append(requested_.data());
    tables_[kReceived]->append(received_.data());
    tables_[kDropped]->append(dropped_.data());
}

void LayerLog::flush() {
    if (file_) file_->flush();
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
    std::unique_ptr<H5File> file = create_on_root(comm, path);
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
}

}  // namespace expar
