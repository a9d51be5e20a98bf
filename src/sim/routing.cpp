#include "routing.h"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <utility>

#include "apportion.h"
#include "capacity.h"
#include "check.h"
#include "enum_option.h"
#include "network.h"
#include "rng.h"

namespace po = boost::program_options;

namespace expar {

namespace {

// Uniform in (0, 1) with 53 random bits, never 0 or 1 (logs stay finite).
double open_uniform(uint64_t bits) {
    return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53;
}

// log of a Gamma(alpha, 1) variate by Marsaglia and Tsang (2000), alpha < 1 through
// Gamma(alpha + 1)·U^(1/alpha). In logs because U^(1/alpha) underflows to 0 for small alpha (alpha = 1e-4:
// U^10000), which made every weight of a rank the same floor: uniform routing where the most concentrated
// was asked for. Draws come from (seed, stream, key·256 + attempt); acceptance is above 95%, so 128
// attempts never run out.
double log_gamma_variate(double alpha, uint64_t seed, uint64_t stream, uint64_t key) {
    uint64_t draw = key << 8;
    double log_boost = 0.0;
    if (alpha < 1.0) {
        log_boost = std::log(open_uniform(rng_bits(seed, stream, draw++))) / alpha;
        alpha += 1.0;
    }
    const double d = alpha - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (int attempt = 0; attempt < 127; ++attempt) {
        const double u1 = open_uniform(rng_bits(seed, stream, draw++));
        const double u2 = open_uniform(rng_bits(seed, stream, draw++));
        const double x = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        const double v = std::pow(1.0 + c * x, 3);
        if (v <= 0) continue;
        const double u = open_uniform(rng_bits(seed, stream, draw++));
        if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return log_boost + std::log(d * v);
    }
    return log_boost + std::log(d);  // unreachable in practice (probability < 0.05^42)
}

// Vose's alias table of weights[E] (all >= 0, sum > 0).
// work: [2E] scratch.
void build_alias(double* prob, int64_t* other, const double* weights, int64_t E, int64_t* work) {
    double total = 0;
    for (int64_t e = 0; e < E; ++e) total += weights[e];
    int64_t* small = work;
    int64_t* large = work + E;
    int64_t num_small = 0, num_large = 0;
    for (int64_t e = 0; e < E; ++e) {
        prob[e] = weights[e] * static_cast<double>(E) / total;
        other[e] = e;
        if (prob[e] < 1.0)
            small[num_small++] = e;
        else
            large[num_large++] = e;
    }
    while (num_small > 0 && num_large > 0) {
        const int64_t s = small[--num_small], l = large[num_large - 1];
        other[s] = l;
        prob[l] -= 1.0 - prob[s];
        if (prob[l] < 1.0) {
            --num_large;
            small[num_small++] = l;
        }
    }
    for (int64_t i = 0; i < num_large; ++i) prob[large[i]] = 1.0;
    for (int64_t i = 0; i < num_small; ++i) prob[small[i]] = 1.0;  // rounding leftovers
}

int64_t alias_draw(const double* prob, const int64_t* other, int64_t E, uint64_t bits) {
    const double u = static_cast<double>(bits >> 11) * 0x1.0p-53 * static_cast<double>(E);
    const int64_t column = std::min<int64_t>(static_cast<int64_t>(u), E - 1);
    return (u - static_cast<double>(column)) < prob[column] ? column : other[column];
}

// Splits "FILE.h5:/dataset" at the last ":/".
std::pair<std::string, std::string> split_replay(const std::string& text) {
    const size_t colon = text.rfind(":/");
    EXPAR_REQUIRE(colon != std::string::npos && colon > 0,
                  "--replay '" << text << "' must be FILE.h5:/dataset, e.g. log.h5:/routing/layer0");
    return {text.substr(0, colon), text.substr(colon + 1)};
}

// Silences HDF5's error stack printing while alive: a missing file is our one-line error, not a dump.
class QuietHdf5 {
   public:
    QuietHdf5() {
        H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
    ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

   private:
    H5E_auto2_t func_ = nullptr;
    void* data_ = nullptr;
};

}  // namespace

std::string replay_file(const std::string& file_and_dataset) {
    const size_t colon = file_and_dataset.rfind(":/");
    return colon == std::string::npos || colon == 0 ? file_and_dataset : file_and_dataset.substr(0, colon);
}

// ---------------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------------
// Replay

RoutingLog read_routing_log(const std::string& text, int64_t layer) {
    const auto [path, dataset_path] = split_replay(text);
    QuietHdf5 quiet;
    RoutingLog log;
    log.origin = text;
    if (!std::ifstream(path) || H5Fis_hdf5(path.c_str()) <= 0)
        EXPAR_FAIL("cannot read --replay file '" << path << "' (missing or not HDF5)");
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    EXPAR_REQUIRE(file >= 0, "cannot read --replay file '" << path << "' (missing or not HDF5)");
    const hid_t dataset = H5Lexists(file, dataset_path.c_str(), H5P_DEFAULT) > 0
                              ? H5Dopen2(file, dataset_path.c_str(), H5P_DEFAULT)
                              : hid_t{-1};
    if (dataset < 0) {
        H5Fclose(file);
        EXPAR_FAIL("--replay: '" << path << "' has no dataset '" << dataset_path << "'");
    }
    const hid_t space = H5Dget_space(dataset);
    // [records, P, E] or the trainer's [records, M, P, E]: read as 4-D with M = 1 for the former.
    hsize_t dims[4] = {0, 1, 0, 0};
    const int rank = H5Sget_simple_extent_ndims(space);
    if (rank == 3) {
        hsize_t dims3[3] = {0, 0, 0};
        H5Sget_simple_extent_dims(space, dims3, nullptr);
        dims[0] = dims3[0];
        dims[2] = dims3[1];
        dims[3] = dims3[2];
    }
    if (rank == 4) H5Sget_simple_extent_dims(space, dims, nullptr);
    const bool shape_ok =
        (rank == 3 || rank == 4) && dims[0] > 0 && dims[1] > 0 && dims[2] > 0 && dims[3] > 0;
    std::string shape = std::to_string(rank) + " dimensions";  // for the error: the shape when it has one
    if (rank == 3 || rank == 4) {
        shape = "shape [" + std::to_string(dims[0]);
        for (int i = rank == 3 ? 2 : 1; i < 4; ++i) shape += ", " + std::to_string(dims[i]);
        shape += "]";
    }
    const bool layer_ok = layer >= 0 && static_cast<hsize_t>(layer) < dims[1];
    herr_t status = -1;
    if (shape_ok && layer_ok) {
        log.num_records = static_cast<int64_t>(dims[0]);
        log.num_ranks = static_cast<int64_t>(dims[2]);
        log.num_experts = static_cast<int64_t>(dims[3]);
        std::vector<double> all(dims[0] * dims[1] * dims[2] * dims[3]);
        status = H5Dread(dataset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, all.data());
        const int64_t PE = log.num_ranks * log.num_experts;
        log.counts.resize(log.num_records * PE);
        for (int64_t r = 0; r < log.num_records; ++r)
            std::copy(all.begin() + (r * static_cast<int64_t>(dims[1]) + layer) * PE,
                      all.begin() + (r * static_cast<int64_t>(dims[1]) + layer + 1) * PE,
                      log.counts.begin() + r * PE);
    }
    H5Sclose(space);
    H5Dclose(dataset);
    H5Fclose(file);
    EXPAR_REQUIRE(shape_ok,
                  "--replay: " << text
                               << " must be a non-empty [records, ranks, experts] array (or the "
                                  "trainer's [records, layers, ranks, experts]) of routed counts (got "
                               << shape << ")");
    EXPAR_REQUIRE(layer_ok, "--replay-layer " << layer << " is out of range: " << text << " has " << dims[1]
                                              << " layer" << (dims[1] == 1 ? "" : "s"));
    EXPAR_REQUIRE(status >= 0, "--replay: cannot read " << text << " as numbers");
    for (int64_t i = 0; i < log.num_records * log.num_ranks; ++i) {
        double sum = 0;
        for (int64_t e = 0; e < log.num_experts; ++e) {
            const double c = log.counts[i * log.num_experts + e];
            EXPAR_REQUIRE(std::isfinite(c) && c >= 0, "--replay: " << text << " record " << i / log.num_ranks
                                                                   << " rank " << i % log.num_ranks
                                                                   << " has a negative or non-finite count");
            sum += c;
        }
        EXPAR_REQUIRE(sum > 0, "--replay: " << text << " record " << i / log.num_ranks << " rank "
                                            << i % log.num_ranks << " routed no tokens");
    }
    return log;
}

void replay_fractions(
    double* fractions, const RoutingLog& log, int64_t record, int rank, int num_ranks, int64_t E) {
    const int64_t Et = log.num_experts, Pt = log.num_ranks;
    EXPAR_REQUIRE(E == Et || (E > Et && E % Et == 0) || (Et > E && Et % E == 0),
                  "--replay: " << log.origin << " has " << Et << " experts, the simulation " << E
                               << ": they must be equal, or one a multiple of the other");
    const double* records = log.counts.data() + (record % log.num_records) * Pt * Et;
    std::fill(fractions, fractions + E, 0.0);
    double total = 0;
    auto add_rank = [&](int64_t q) {
        const double* row = records + q * Et;
        for (int64_t e = 0; e < Et; ++e) {
            total += row[e];
            if (E >= Et) {  // split trained expert e evenly over m simulated ones
                const int64_t m = E / Et;
                for (int64_t i = 0; i < m; ++i) fractions[e * m + i] += row[e] / static_cast<double>(m);
            } else {  // merge m trained experts into one
                fractions[e / (Et / E)] += row[e];
            }
        }
    };
    if (num_ranks < Pt) {
        for (int64_t q = rank; q < Pt; q += num_ranks) add_rank(q);
    } else {
        add_rank(rank % Pt);
    }
    for (int64_t e = 0; e < E; ++e) fractions[e] /= total;
}

// ---------------------------------------------------------------------------------------------------

ShadowCostModel shadow_cost_model(const Workload& w, const LayerCluster& cluster) {
    return shadow_cost_model(expert_forward_flops_per_token(w.model), token_bytes(w),
                             static_cast<double>(expert_num_params(w.model)) * w.dtype_bytes, cluster);
}

LayerCluster routing_cluster(const Topology& t, int num_ranks, const std::string& precision) {
    // The timing engine's placement (network.h), so routing and timing agree on nodes.
    return cluster_with_topology_rates(sim_node_map(t, num_ranks), t, precision);
}

// ---------------------------------------------------------------------------------------------------

RoutingModel::RoutingModel(const RoutingSpec& spec,
                           const LayerConfig& config,
                           const LayerCluster& cluster,
                           const ShadowCostModel& shadow_model)
    : spec_(spec), config_(config), cluster_(cluster) {
    num_ranks_ = cluster_.nodes.num_ranks;
    validate(config_, num_ranks_);
    const int64_t E = config_.num_experts, T = config_.tokens_per_rank, P = num_ranks_;
    const int k = config_.top_k;
    num_experts_ = E;
    EXPAR_REQUIRE(spec_.sim_tokens >= 0,
                  "--sim-tokens must be >= 0 (0 = all tokens), got " << spec_.sim_tokens);
    sample_tokens_ = spec_.sim_tokens > 0 ? std::min(spec_.sim_tokens, T) : T;
    const bool token_level = config_.gate_topology != GateTopology::none || config_.node_limit > 0 ||
                             config_.router_bias_rate > 0 || config_.gate == GateKind::gshard ||
                             config_.gate == GateKind::noisy_topk;
    if (spec_.path == RoutingPath::count)
        EXPAR_REQUIRE(!token_level,
                      "--routing-path count cannot apply token-level routing (--gate-topology, --node-limit, "
                      "--router-bias, --gate gshard or noisy-topk): use --routing-path gate or auto");
    use_gate_ = spec_.path == RoutingPath::gate || (spec_.path == RoutingPath::automatic && token_level);
    EXPAR_REQUIRE((spec_.kind != RoutingKind::zipf && spec_.kind != RoutingKind::drift) ||
                      (std::isfinite(spec_.zipf_s) && spec_.zipf_s >= 0),
                  "--skew (the Zipf exponent) must be >= 0, got " << spec_.zipf_s);
    EXPAR_REQUIRE(std::isfinite(spec_.dirichlet_alpha) && spec_.dirichlet_alpha > 0,
                  "--dirichlet-alpha must be positive, got " << spec_.dirichlet_alpha);
    EXPAR_REQUIRE(std::isfinite(spec_.drift_rate) && spec_.drift_rate >= 0 && spec_.drift_rate <= 1e9,
                  "--drift-rate must be in [0, 1e9] experts per step, got " << spec_.drift_rate);
    if (spec_.kind == RoutingKind::replay) {
        EXPAR_REQUIRE(!spec_.replay.empty(), "--routing replay needs --replay FILE.h5:/dataset");
        log_ = std::make_unique<RoutingLog>(read_routing_log(spec_.replay, spec_.replay_layer));
        std::vector<double> check(E);
        replay_fractions(check.data(), *log_, 0, 0, num_ranks_, E);  // checks E against the log
    }

    selection_bias_.assign(E, 0.0f);
    expert_load_.resize(E);
    weights_.resize(E);
    alias_prob_.resize(E);
    alias_other_.resize(E);
    alias_work_.resize(2 * E);
    scale_weights_.resize(E);
    sample_counts_.resize(E);
    chosen_.resize(k);
    if (spec_.kind == RoutingKind::dirichlet && P * E <= (int64_t{1} << 24)) {
        dirichlet_cache_.resize(P * E);
        for (int r = 0; r < num_ranks_; ++r) dirichlet_weights(r, dirichlet_cache_.data() + r * E);
    }
    if (config_.shadow) {
        EXPAR_REQUIRE(shadow_model.device_flops_per_s > 0 && shadow_model.network_bytes_per_s > 0,
                      "--shadow needs the compute rate and link bandwidths of a topology file");
        shadow_policy_ = std::make_unique<ShadowPolicy>(num_ranks_, E, shadow_model);
    }

    const int64_t S = sample_tokens_;
    gate_config_ = config_;
    gate_config_.tokens_per_rank = S;
    if (config_.gate_topology == GateTopology::fastermoe)
        max_offnode_ = topology_gate_max_offnode(gate_config_, cluster_);  // L for S tokens, not T
    if (config_.node_limit > 0)
        EXPAR_REQUIRE(config_.node_limit * cluster_.nodes.ranks_per_node * (E / P) >= k,
                      "--node-limit " << config_.node_limit << " leaves "
                                      << config_.node_limit * cluster_.nodes.ranks_per_node * (E / P)
                                      << " experts per token, fewer than --top-k " << k);
    if (!use_gate_) return;
    // The gate sees scores as x [S, E] through an identity router (d = E), so logits = scores.
    gate_config_.d_model = E;
    x_.resize(S * E);
    router_w_.assign(E * E, 0.0f);
    for (int64_t e = 0; e < E; ++e) router_w_[e * E + e] = 1.0f;
    if (config_.gate == GateKind::noisy_topk) router_noise_w_.assign(E * E, 0.0f);
    zero_bias_.assign(E, 0.0f);
    logits_.resize(S * E);
    probs_.resize(S * E);
    lse_.resize(S);
    noise_logits_.resize(config_.gate == GateKind::noisy_topk ? S * E : 0);
    scores_.resize(config_.gate == GateKind::noisy_topk ? S * E : 0);
    weight_.resize(S * k);
    selection_.resize(S * E);
    node_scratch_.resize(cluster_.nodes.num_nodes + E);
    expert_.resize(S * k);
    routed_.resize(S * k);
    order_.resize(S * k);
    prob_sum_.resize(E);
    node_of_expert_.resize(E);
    for (int64_t e = 0; e < E; ++e) node_of_expert_[e] = cluster_.nodes.node_of_rank[e / (E / P)];
}

RoutingModel::~RoutingModel() = default;

RoutingStep RoutingModel::make_step() const {
    RoutingStep s;
    const int max_shadowed =
        shadow_policy_ ? static_cast<int>(std::min<int64_t>(config_.shadow_max_experts, num_experts_)) : 0;
    s.resize(num_ranks_, num_experts_, max_shadowed);
    s.tokens_per_rank = config_.tokens_per_rank;
    s.redirected.resize(num_ranks_);
    return s;
}

void RoutingModel::dirichlet_weights(int rank, double* weights) {
    const int64_t E = num_experts_;
    // Gamma variates scaled by the largest (a Dirichlet draw up to its sum, which the samplers divide
    // out), formed in logs: the largest weight is 1, the smallest are floored to keep scores finite.
    double largest = -std::numeric_limits<double>::infinity();
    for (int64_t e = 0; e < E; ++e) {
        weights[e] = log_gamma_variate(spec_.dirichlet_alpha, spec_.seed, kStreamSimDirichlet,
                                       static_cast<uint64_t>(rank) * E + e);
        largest = std::max(largest, weights[e]);
    }
    for (int64_t e = 0; e < E; ++e) weights[e] = std::max(1e-300, std::exp(weights[e] - largest));
}

void RoutingModel::expert_weights(int64_t step, int rank, double* w) {
    const int64_t E = num_experts_;
    switch (spec_.kind) {
        case RoutingKind::uniform:
            std::fill(w, w + E, 1.0);
            return;
        case RoutingKind::zipf:
        case RoutingKind::drift: {
            // drift: the ranking rotates; the expert of hotness j is (hot + j) mod E.
            const int64_t hot =
                spec_.kind == RoutingKind::drift
                    ? static_cast<int64_t>(  // fmod is exact: no int64 overflow at a huge rate
                          std::fmod(std::floor(spec_.drift_rate * static_cast<double>(step)),
                                    static_cast<double>(E)))
                    : 0;
            for (int64_t e = 0; e < E; ++e)
                w[e] = std::pow(static_cast<double>((e - hot + E) % E + 1), -spec_.zipf_s);
            return;
        }
        case RoutingKind::dirichlet:
            if (!dirichlet_cache_.empty())
                std::copy(dirichlet_cache_.begin() + rank * E, dirichlet_cache_.begin() + (rank + 1) * E, w);
            else
                dirichlet_weights(rank, w);
            return;
        case RoutingKind::replay:
            replay_fractions(w, *log_, step, rank, num_ranks_, E);
            for (int64_t e = 0; e < E; ++e) w[e] = std::max(w[e], 1e-300);  // scores stay finite
            return;
    }
}

// Each token takes k distinct experts: the first drawn with probability ∝ weight, each next one from
// the rest ∝ weight (successive sampling, Plackett–Luce), by alias draws that reject repeats.
void RoutingModel::sample_count_path(int64_t step, int rank, const double* w, int64_t* counts) {
    const int64_t E = num_experts_, S = sample_tokens_;
    const int k = config_.top_k;
    std::fill(counts, counts + E, 0);
    const uint64_t stream = rng_per_step(kStreamSimRouting, step);
    uint64_t draw = static_cast<uint64_t>(rank) << 40;
    double total = 0;
    for (int64_t e = 0; e < E; ++e) total += w[e];
    for (int64_t t = 0; t < S; ++t) {
        double taken_weight = 0;
        for (int j = 0; j < k; ++j) {
            int64_t e = -1;
            for (int attempt = 0; attempt < 64 && e < 0; ++attempt) {
                const int64_t candidate = alias_draw(alias_prob_.data(), alias_other_.data(), E,
                                                     rng_bits(spec_.seed, stream, draw++));
                if (std::find(chosen_.begin(), chosen_.begin() + j, candidate) == chosen_.begin() + j)
                    e = candidate;
            }
            if (e < 0) {  // a few experts hold nearly all weight: draw from the rest by a linear scan
                double u = open_uniform(rng_bits(spec_.seed, stream, draw++)) * (total - taken_weight);
                int64_t heaviest = -1;
                for (int64_t c = 0; c < E && e < 0; ++c) {
                    if (std::find(chosen_.begin(), chosen_.begin() + j, c) != chosen_.begin() + j) continue;
                    if (heaviest < 0 || w[c] > w[heaviest]) heaviest = c;
                    if ((u -= w[c]) < 0) e = c;
                }
                // The rest's weight underflowed or rounded to nothing (Zipf s = 1100: 2^-1100 is 0): the
                // likeliest of the rest, as the gate path's argmax of log-weights and noise picks.
                if (e < 0) e = heaviest;
            }
            chosen_[j] = e;
            taken_weight += w[e];
            ++counts[e];
        }
    }
}

// Scores x[t, e] = ln w[e] + Gumbel noise, so the top-1 is expert e with probability w[e] / Σw and the
// top-k is a successive draw without replacement (the Gumbel-top-k trick), the same law as the count
// path. The gate then applies every routing constraint exactly as in the MoE layer.
void RoutingModel::sample_gate_path(
    int64_t step, int rank, const double* w, int64_t* counts, int64_t* redirected) {
    const int64_t E = num_experts_, S = sample_tokens_;
    const uint64_t stream = rng_per_step(kStreamSimScores, step);
    for (int64_t t = 0; t < S; ++t) {
        const uint64_t first = (static_cast<uint64_t>(rank) * S + t) * E;
        for (int64_t e = 0; e < E; ++e) {
            const double u = open_uniform(rng_bits(spec_.seed, stream, first + e));
            x_[t * E + e] = static_cast<float>(std::log(w[e]) - std::log(-std::log(u)));
        }
    }
    GateState state{logits_.data(),    probs_.data(),  lse_.data(),         noise_logits_.data(),
                    scores_.data(),    expert_.data(), weight_.data(),      routed_.data(),
                    selection_.data(), order_.data(),  node_scratch_.data()};
    GatePartialSums sums{prob_sum_.data(), counts};
    GateRouting routing;
    routing.selection_bias = config_.router_bias_rate > 0 ? selection_bias_.data() : nullptr;
    routing.node_of_expert = node_of_expert_.data();
    routing.num_nodes = cluster_.nodes.num_nodes;
    routing.node_limit = config_.node_limit;
    routing.home_node = cluster_.nodes.node_of_rank[rank];
    routing.max_offnode = max_offnode_;
    const GateInputs in{x_.data(),
                        router_w_.data(),
                        router_noise_w_.empty() ? nullptr : router_noise_w_.data(),
                        zero_bias_.data(),
                        S,
                        rank * S,
                        spec_.seed,
                        step,
                        routing};
    gate_forward(state, &sums, in, gate_config_);
    *redirected = sums.num_redirected;
}

// Sample counts of S tokens → counts of T tokens with the same per-expert fractions (largest remainder).
void RoutingModel::scale_to_tokens(int64_t* requested_row, const int64_t* sample_counts) {
    const int64_t E = num_experts_, S = sample_tokens_, T = config_.tokens_per_rank;
    if (S == T) {
        std::copy(sample_counts, sample_counts + E, requested_row);
        return;
    }
    int64_t routed = 0;
    for (int64_t e = 0; e < E; ++e) {
        routed += sample_counts[e];
        scale_weights_[e] = static_cast<double>(sample_counts[e]);
    }
    const int64_t target = (routed * T + S / 2) / S;  // = T·k when every slot is routed
    apportion(requested_row, scale_weights_.data(), E, target, alias_work_.data());
}

void RoutingModel::step(int64_t step, RoutingStep* out) {
    const int64_t E = num_experts_, T = config_.tokens_per_rank, S = sample_tokens_;
    const int P = num_ranks_;
    EXPAR_ASSERT(out->num_ranks == P && out->num_experts == E);
    out->step = step;
    const bool shared_weights = spec_.kind == RoutingKind::uniform || spec_.kind == RoutingKind::zipf ||
                                spec_.kind == RoutingKind::drift;
    out->num_redirected = 0;
    for (int r = 0; r < P; ++r) {
        int64_t* row = out->requested.data() + r * E;
        out->redirected[r] = 0;
        if (spec_.kind == RoutingKind::replay && !use_gate_) {
            // Exact replay: the log's fractions of this rank's T·k assignments.
            replay_fractions(weights_.data(), *log_, step, r, P, E);
            apportion(row, weights_.data(), E, T * config_.top_k, alias_work_.data());
            continue;
        }
        if (!shared_weights || r == 0) {
            expert_weights(step, r, weights_.data());
            if (!use_gate_)
                build_alias(alias_prob_.data(), alias_other_.data(), weights_.data(), E, alias_work_.data());
        }
        if (use_gate_) {
            int64_t redirected = 0;
            sample_gate_path(step, r, weights_.data(), sample_counts_.data(), &redirected);
            out->redirected[r] = (redirected * T + S / 2) / S;
            out->num_redirected += out->redirected[r];
        } else {
            sample_count_path(step, r, weights_.data(), sample_counts_.data());
        }
        scale_to_tokens(row, sample_counts_.data());
    }
    decide(out);
    if (config_.router_bias_rate > 0) {
        std::fill(expert_load_.begin(), expert_load_.end(), 0);
        for (int r = 0; r < P; ++r)
            for (int64_t e = 0; e < E; ++e) expert_load_[e] += out->requested[r * E + e];
        router_bias_update(selection_bias_.data(), expert_load_.data(), E, config_.router_bias_rate);
    }
}

// The layer's own count decisions (dispatch_layout.h), then the totals the simulator reports.
void RoutingModel::decide(RoutingStep* out) {
    const int64_t E = num_experts_, P = num_ranks_;
    plan_counts(out, config_, shadow_policy_.get());
    out->num_requested = 0;
    out->num_allowed = 0;
    for (int64_t i = 0; i < P * E; ++i) {
        out->num_requested += out->requested[i];
        out->num_allowed += out->allowed[i];
    }
}

// ---------------------------------------------------------------------------------------------------

po::options_description routing_options_description(RoutingOptions* o) {
    po::options_description routing("Routing (docs/simulator.md, \"Routing\")");
    routing.add_options()("routing", enum_value(&o->routing), enum_help<RoutingKind>().c_str())(
        "dirichlet-alpha", po::value<double>(&o->dirichlet_alpha)->default_value(o->dirichlet_alpha),
        "dirichlet: concentration alpha per expert; small = each rank prefers few experts [1]")(
        "drift-rate", po::value<double>(&o->drift_rate)->default_value(o->drift_rate),
        "drift: hottest expert at step t is floor(rate*t) mod E [experts/step]")(
        "replay", po::value<std::string>(&o->replay)->default_value(o->replay),
        "replay: FILE.h5:/dataset of routed counts [records, ranks, experts] from a trainer log; record "
        "t mod records drives step t, scaled to the simulated ranks, experts and tokens")(
        "replay-layer", po::value<int64_t>(&o->replay_layer)->default_value(o->replay_layer),
        "replay: the MoE layer of a trainer log's /routing/counts [records, layers, ranks, experts] "
        "[layer index]")(
        "sim-tokens", po::value<int64_t>(&o->sim_tokens)->default_value(o->sim_tokens),
        "tokens per rank actually routed each step, their counts then scaled to --tokens-per-rank "
        "[tokens]; 0 = all")("routing-path", enum_value(&o->path), enum_help<RoutingPath>().c_str());
    return routing;
}

RoutingSpec make_routing_spec(const RoutingOptions& o, double skew, uint64_t seed) {
    RoutingSpec spec;
    spec.kind = o.routing;
    spec.path = o.path;
    spec.zipf_s = skew;
    spec.dirichlet_alpha = o.dirichlet_alpha;
    spec.drift_rate = o.drift_rate;
    spec.replay = o.replay;
    spec.replay_layer = o.replay_layer;
    spec.sim_tokens = o.sim_tokens;
    spec.seed = seed;
    EXPAR_REQUIRE(skew == 0 || spec.kind == RoutingKind::zipf || spec.kind == RoutingKind::drift,
                  "--skew " << skew << " applies to --routing zipf or drift, not " << to_string(o.routing));
    EXPAR_REQUIRE(spec.kind == RoutingKind::replay || o.replay.empty(), "--replay needs --routing replay");
    EXPAR_REQUIRE(spec.kind != RoutingKind::replay || !o.replay.empty(),
                  "--routing replay needs --replay FILE.h5:/dataset");
    EXPAR_REQUIRE(o.replay_layer >= 0, "--replay-layer must be >= 0, got " << o.replay_layer);
    EXPAR_REQUIRE(o.sim_tokens >= 0, "--sim-tokens must be >= 0 (0 = all tokens), got " << o.sim_tokens);
    EXPAR_REQUIRE(std::isfinite(o.dirichlet_alpha) && o.dirichlet_alpha > 0,
                  "--dirichlet-alpha must be positive, got " << o.dirichlet_alpha);
    EXPAR_REQUIRE(std::isfinite(o.drift_rate) && o.drift_rate >= 0 && o.drift_rate <= 1e9,
                  "--drift-rate must be in [0, 1e9] experts per step, got " << o.drift_rate);
    return spec;
}

}  // namespace expar
