#include "presets.h"

#include "check.h"

namespace expar {

namespace {

// Fields: name, d_model, d_ff, activation, activation_name, E, k, shared experts, shared d_ff,
// MoE layers, dense layers, dense d_ff.
// Each entry names its primary source: the model's released config file (Hugging Face repository
// "owner/name config.json", or the model's own code) or its paper (authors, year, arXiv id).
// "(?)" = not confirmed against a primary source: check before relying on it.
const ModelSpec kPresets[] = {
    // Switch-Base-8 (T5 encoder-decoder, 12+12 layers, MoE every other FFN: 6 + 6 MoE, 6 + 6 dense):
    // d_model 768, d_ff 3072, ReLU, E = 8, top-1. Dense FFNs as wide as the experts (T5-Base).
    // Source: google/switch-base-8 config.json (d_model, d_ff, num_layers 12, num_decoder_layers 12,
    // encoder/decoder_sparse_step 2, num_experts 8).
    {"switch-base-8", 768, 3072, Activation::relu, "relu", 8, 1, 0, 0, 12, 12, 3072},
    // Switch-C-2048: d_model 2080 (?), 15+15 layers (?) with every FFN an MoE, d_ff 6144 (?), ReLU,
    // E = 2048, top-1. Source: Fedus, Zoph, Shazeer, "Switch Transformers: Scaling to Trillion Parameter
    // Models with Simple and Efficient Sparsity", JMLR 2022, arXiv:2101.03961, Table 9; the
    // google/switch-c-2048 config.json disagrees with it on the layer counts, hence the (?).
    {"switch-c-2048", 2080, 6144, Activation::relu, "relu", 2048, 1, 0, 0, 30, 0, 0},
    // GShard M4 600B: d_model 1024, 36 layers with MoE every other (18 MoE + 18 dense), d_ff 8192, ReLU,
    // E = 2048, top-2 (random 2nd expert: use --gate gshard). Dense FFN width = expert width (assumed).
    // Source: Lepikhin et al., "GShard: Scaling Giant Models with Conditional Computation and Automatic
    // Sharding", ICLR 2021, arXiv:2006.16668 (Table 1: 2048 experts, 36 layers; Appendix A.2: widths).
    {"gshard-m4-600b", 1024, 8192, Activation::relu, "relu", 2048, 2, 0, 0, 18, 18, 8192},
    // Mixtral-8x7B: d_model 4096, 32 layers all MoE, d_ff 14336, SwiGLU, E = 8, top-2.
    // Source: mistralai/Mixtral-8x7B-v0.1 config.json; Jiang et al., "Mixtral of Experts", 2024,
    // arXiv:2401.04088.
    {"mixtral-8x7b", 4096, 14336, Activation::swiglu, "swiglu", 8, 2, 0, 0, 32, 0, 0},
    // Mixtral-8x22B: d_model 6144, 56 layers all MoE, d_ff 16384, SwiGLU, E = 8, top-2.
    // Source: mistralai/Mixtral-8x22B-v0.1 config.json.
    {"mixtral-8x22b", 6144, 16384, Activation::swiglu, "swiglu", 8, 2, 0, 0, 56, 0, 0},
    // DBRX: d_model 6144, 40 layers all MoE, d_ff 10752, SwiGLU, E = 16, top-4.
    // Source: databricks/dbrx-base config.json (d_model, n_layers, ffn_config: ffn_hidden_size,
    // moe_num_experts, moe_top_k).
    {"dbrx", 6144, 10752, Activation::swiglu, "swiglu", 16, 4, 0, 0, 40, 0, 0},
    // Snowflake Arctic: d_model 7168, 35 layers all MoE, d_ff 4864, SwiGLU, E = 128, top-2, plus a dense
    // residual FFN per layer, modelled as one shared expert of d_ff 4864 (?) (width unverified: vLLM's
    // Arctic code sizes the residual MLP by hidden_size). Source: Snowflake/snowflake-arctic-instruct
    // config.json (hidden_size, intermediate_size, num_hidden_layers, num_local_experts, use_residual).
    {"arctic", 7168, 4864, Activation::swiglu, "swiglu", 128, 2, 1, 4864, 35, 0, 0},
    // DeepSeekMoE-16B: d_model 2048, 28 layers with the first dense (27 MoE + 1 dense), d_ff 1408,
    // SwiGLU, E = 64, top-6, 2 shared experts of 1408. Sources: Dai et al., "DeepSeekMoE: Towards
    // Ultimate Expert Specialization in Mixture-of-Experts Language Models", 2024, arXiv:2401.06066,
    // sec. 5.1.2; deepseek-ai/deepseek-moe-16b-base config.json (moe_intermediate_size). Dense d_ff 10944
    // (?): that config.json's intermediate_size, not re-checked.
    {"deepseek-moe-16b", 2048, 1408, Activation::swiglu, "swiglu", 64, 6, 2, 1408, 27, 1, 10944},
    // DeepSeek-V2: d_model 5120, 60 layers with the first dense (59 MoE + 1 dense), d_ff 1536, SwiGLU,
    // E = 160, top-6 (8 groups, top-3 groups), 2 shared experts (of 1536, as the routed ones). Sources:
    // DeepSeek-AI, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model",
    // 2024, arXiv:2405.04434; deepseek-ai/DeepSeek-V2 config.json. Dense d_ff 12288 (?): that
    // config.json's intermediate_size, not re-checked.
    {"deepseek-v2", 5120, 1536, Activation::swiglu, "swiglu", 160, 6, 2, 1536, 59, 1, 12288},
    // DeepSeek-V3: d_model 7168, 61 layers with the first 3 dense of d_ff 18432 (58 MoE + 3 dense),
    // d_ff 2048, SwiGLU, E = 256, top-8 (sigmoid, bias-corrected; node-limited to 4 nodes: --node-limit 4,
    // --router-bias 0.001), 1 shared expert of 2048. Sources: deepseek-ai/DeepSeek-V3 config.json;
    // DeepSeek-AI, "DeepSeek-V3 Technical Report", 2024, arXiv:2412.19437 (node limit, bias update).
    {"deepseek-v3", 7168, 2048, Activation::swiglu, "swiglu", 256, 8, 1, 2048, 58, 3, 18432},
    // Qwen2-57B-A14B: d_model 3584, 28 layers all MoE, d_ff 2560, SwiGLU, E = 64, top-8, 1 gated shared
    // expert of d_ff 20480 (its sigmoid gate, d FLOPs per token, is not counted). Sources:
    // Qwen/Qwen2-57B-A14B config.json (moe_intermediate_size, shared_expert_intermediate_size);
    // Yang et al., "Qwen2 Technical Report", 2024, arXiv:2407.10671.
    {"qwen2-57b-a14b", 3584, 2560, Activation::swiglu, "swiglu", 64, 8, 1, 20480, 28, 0, 0},
    // OLMoE-1B-7B: d_model 2048, 16 layers all MoE, d_ff 1024, SwiGLU, E = 64, top-8, dropless
    // (--capacity-factor 0). Sources: allenai/OLMoE-1B-7B-0924 config.json; Muennighoff et al., "OLMoE:
    // Open Mixture-of-Experts Language Models", 2024, arXiv:2409.02060.
    {"olmoe-1b-7b", 2048, 1024, Activation::swiglu, "swiglu", 64, 8, 0, 0, 16, 0, 0},
    // Grok-1: d_model 6144, 64 layers all MoE, d_ff 32768, GeLU-GLU (?) (3 matrices: simulated as a gated
    // FFN, the same FLOPs), E = 8, top-2. Source: xai-org/grok-1 on GitHub (run.py: model widths,
    // layers, experts; model.py: ffn_size and the gated expert, not re-checked, hence the (?)).
    {"grok-1", 6144, 32768, Activation::swiglu, "gelu-glu", 8, 2, 0, 0, 64, 0, 0},
};

}  // namespace

std::vector<std::string> preset_names() {
    std::vector<std::string> names;
    for (const ModelSpec& preset : kPresets) names.push_back(preset.name);
    return names;
}

ModelSpec model_preset(const std::string& name) {
    std::string known;
    for (const ModelSpec& preset : kPresets) {
        if (preset.name == name) return preset;
        known += (known.empty() ? "" : ", ") + preset.name;
    }
    EXPAR_FAIL("unknown --model '" << name << "' (known: " << known << ")");
}

}  // namespace expar
