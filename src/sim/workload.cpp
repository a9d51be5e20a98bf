#include "workload.h"

#include "check.h"
#include "presets.h"

namespace po = boost::program_options;

namespace expar {

int num_ffn_matrices(Activation activation) {
    return has_gate_matrix(activation) ? 3 : 2;
}

ExpertShape expert_shape(const ModelSpec& m) {
    return ExpertShape{m.d_model, m.d_ff, m.activation};
}

ExpertShape shared_expert_shape(const ModelSpec& m) {
    return ExpertShape{m.d_model, m.shared_d_ff, m.activation};
}

double expert_forward_flops_per_token(const ModelSpec& m) {
    return expert_ffn_forward_flops(1, expert_shape(m));
}

double moe_layer_forward_flops_per_token(const ModelSpec& m) {
    const double router = 2.0 * static_cast<double>(m.d_model) * static_cast<double>(m.num_experts);
    const double shared = m.num_shared_experts > 0
                              ? m.num_shared_experts * expert_ffn_forward_flops(1, shared_expert_shape(m))
                              : 0.0;
    return router + m.top_k * expert_forward_flops_per_token(m) + shared;
}

int64_t expert_num_params(const ModelSpec& m) {
    return num_ffn_matrices(m.activation) * m.d_model * m.d_ff;
}

double token_bytes(const Workload& w) {
    return static_cast<double>(w.model.d_model) * w.dtype_bytes;
}

void validate(const Workload& w) {
    const ModelSpec& m = w.model;
    EXPAR_REQUIRE(m.d_model > 0, "--d-model must be positive (got " << m.d_model << ")");
    EXPAR_REQUIRE(m.d_ff > 0, "--d-ff must be positive (got " << m.d_ff << ")");
    EXPAR_REQUIRE(m.num_experts > 0, "--experts must be positive (got " << m.num_experts << ")");
    EXPAR_REQUIRE(m.top_k > 0 && m.top_k <= m.num_experts,
                  "--top-k must be in 1..--experts " << m.num_experts << " (got " << m.top_k << ")");
    EXPAR_REQUIRE(m.num_shared_experts >= 0,
                  "--shared-experts must be >= 0 (got " << m.num_shared_experts << ")");
    EXPAR_REQUIRE(m.num_shared_experts == 0 || m.shared_d_ff > 0,
                  "--shared-experts " << m.num_shared_experts << " needs --shared-d-ff > 0");
    EXPAR_REQUIRE(m.num_moe_layers > 0, "--moe-layers must be positive (got " << m.num_moe_layers << ")");
    EXPAR_REQUIRE(m.num_dense_layers >= 0, "--dense-layers must be >= 0 (got " << m.num_dense_layers << ")");
    EXPAR_REQUIRE(m.dense_d_ff >= 0, "--dense-d-ff must be >= 0 (got " << m.dense_d_ff << ")");
    EXPAR_REQUIRE(w.tokens_per_rank > 0,
                  "--tokens-per-rank must be positive (got " << w.tokens_per_rank << ")");
    EXPAR_REQUIRE(w.dtype_bytes == 1 || w.dtype_bytes == 2 || w.dtype_bytes == 4 || w.dtype_bytes == 8,
                  "--dtype-bytes must be 1, 2, 4 or 8 (got " << w.dtype_bytes << ")");
}

po::options_description workload_options_description(WorkloadOptions* o) {
    std::string names;
    for (const std::string& name : preset_names()) names += (names.empty() ? "" : " | ") + name;
    po::options_description model("Model (docs/simulator.md, \"Workload\")");
    model.add_options()("model", po::value<std::string>(&o->model)->default_value(o->model),
                        ("preset: " + names +
                         "; fills --experts, --top-k, --d-model, --d-ff, --activation and the options below "
                         "unless given; empty = the options as given")
                            .c_str())(
        "shared-experts", po::value<int>(&o->shared_experts)->default_value(o->shared_experts),
        "always-on (shared) experts per MoE layer, computed on every rank for its own tokens [experts]")(
        "shared-d-ff", po::value<int64_t>(&o->shared_d_ff)->default_value(o->shared_d_ff),
        "hidden width of one shared expert [elements]")(
        "moe-layers", po::value<int>(&o->moe_layers)->default_value(o->moe_layers), "MoE layers [layers]")(
        "dense-layers", po::value<int>(&o->dense_layers)->default_value(o->dense_layers),
        "layers with a dense FFN instead [layers]")(
        "dense-d-ff", po::value<int64_t>(&o->dense_d_ff)->default_value(o->dense_d_ff),
        "hidden width of the dense FFNs [elements]; 0 = unknown")(
        "dtype-bytes", po::value<int>(&o->dtype_bytes)->default_value(o->dtype_bytes),
        "bytes per element of tokens and weights: 2 = bf16/fp16, 4 = fp32 [bytes]; independent of "
        "--precision");
    return model;
}

Workload make_workload(const WorkloadOptions& o, const po::variables_map& vm, LayerConfig* layer) {
    // An option counts as given when the command line (or --config) set it.
    auto given = [&](const char* key) {
        const auto it = vm.find(key);
        return it != vm.end() && !it->second.defaulted();
    };
    Workload w;
    ModelSpec& m = w.model;
    if (!o.model.empty()) {
        const ModelSpec preset = model_preset(o.model);
        m = preset;
        if (!given("experts")) layer->num_experts = preset.num_experts;
        if (!given("top-k")) layer->top_k = preset.top_k;
        if (!given("d-model")) layer->d_model = preset.d_model;
        if (!given("d-ff")) layer->d_ff = preset.d_ff;
        if (given("activation")) {
            m.activation_name = to_string(layer->activation);
        } else {
            layer->activation = preset.activation;
        }
    } else {
        m.activation_name = to_string(layer->activation);
    }
    m.d_model = layer->d_model;
    m.d_ff = layer->d_ff;
    m.activation = layer->activation;
    m.num_experts = layer->num_experts;
    m.top_k = layer->top_k;
    if (o.model.empty() || given("shared-experts")) m.num_shared_experts = o.shared_experts;
    if (o.model.empty() || given("shared-d-ff")) m.shared_d_ff = o.shared_d_ff;
    if (o.model.empty() || given("moe-layers")) m.num_moe_layers = o.moe_layers;
    if (o.model.empty() || given("dense-layers")) m.num_dense_layers = o.dense_layers;
    if (o.model.empty() || given("dense-d-ff")) m.dense_d_ff = o.dense_d_ff;
    w.tokens_per_rank = layer->tokens_per_rank;
    w.dtype_bytes = o.dtype_bytes;
    validate(w);
    return w;
}

}  // namespace expar
