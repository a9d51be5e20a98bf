#include "presets.h"

#include "check.h"

namespace expar {

namespace {

// Fields: name, d_model, d_ff, activation, activation_name, E, k, shared experts, shared d_ff,
// MoE layers, dense layers, dense d_ff.
// Source of every figure: ../shared/reference/models.md (the models' Hugging Face config.json or paper),
// unless a comment says otherwise. "(?)" = unverified there: check before relying on it.
const ModelSpec kPresets[] = {
    // Switch-Base-8 (T5 encoder-decoder, 12+12 layers, MoE every other FFN: 6 + 6 MoE, 6 + 6 dense):
    // d_model 768, d_ff 3072, ReLU, E = 8, top-1. Dense FFNs as wide as the experts (T5-Base).
    {"switch-base-8", 768, 3072, Activation::relu, "relu", 8, 1, 0, 0, 12, 12, 3072},
    // Switch-C-2048: d_model 2080 (?), 15+15 layers (?) with every FFN an MoE, d_ff 6144 (?), ReLU,
    // E = 2048, top-1. All unverified in models.md.
    {"switch-c-2048", 2080, 6144, Activation::relu, "relu", 2048, 1, 0, 0, 30, 0, 0},
    // GShard M4 600B: d_model 1024, 36 layers with MoE every other (18 MoE + 18 dense), d_ff 8192, ReLU,
    // E = 2048, top-2 (random 2nd expert: use --gate gshard). Dense FFN width = expert width (assumed).
    {"gshard-m4-600b", 1024, 8192, Activation::relu, "relu", 2048, 2, 0, 0, 18, 18, 8192},
    // Mixtral-8x7B: d_model 4096, 32 layers all MoE, d_ff 14336, SwiGLU, E = 8, top-2.
    {"mixtral-8x7b", 4096, 14336, Activation::swiglu, "swiglu", 8, 2, 0, 0, 32, 0, 0},
    // Mixtral-8x22B: d_model 6144, 56 layers all MoE, d_ff 16384, SwiGLU, E = 8, top-2.
    {"mixtral-8x22b", 6144, 16384, Activation::swiglu, "swiglu", 8, 2, 0, 0, 56, 0, 0},
    // DBRX: d_model 6144, 40 layers all MoE, d_ff 10752, SwiGLU, E = 16, top-4.
    {"dbrx", 6144, 10752, Activation::swiglu, "swiglu", 16, 4, 0, 0, 40, 0, 0},
    // Snowflake Arctic: d_model 7168, 35 layers all MoE, d_ff 4864, SwiGLU, E = 128, top-2, plus a dense
    // residual FFN per layer, modelled as one shared expert of d_ff 4864 (?) (width unverified).
    {"arctic", 7168, 4864, Activation::swiglu, "swiglu", 128, 2, 1, 4864, 35, 0, 0},
    // DeepSeekMoE-16B: d_model 2048, 28 layers with the first dense (27 MoE + 1 dense), d_ff 1408,
    // SwiGLU, E = 64, top-6, 2 shared experts of 1408. Dense d_ff 10944 (?): from the model's config.json
    // (intermediate_size) as remembered, not in models.md.
    {"deepseek-moe-16b", 2048, 1408, Activation::swiglu, "swiglu", 64, 6, 2, 1408, 27, 1, 10944},
    // DeepSeek-V2: d_model 5120, 60 layers with the first dense (59 MoE + 1 dense), d_ff 1536, SwiGLU,
    // E = 160, top-6 (8 groups, top-3 groups), 2 shared experts (of 1536, as the routed ones). Dense d_ff
    // 12288 (?): config.json intermediate_size as remembered, not in models.md.
    {"deepseek-v2", 5120, 1536, Activation::swiglu, "swiglu", 160, 6, 2, 1536, 59, 1, 12288},
    // DeepSeek-V3: d_model 7168, 61 layers with the first 3 dense of d_ff 18432 (58 MoE + 3 dense),
    // d_ff 2048, SwiGLU, E = 256, top-8 (sigmoid, bias-corrected; node-limited to 4 nodes: --node-limit 4,
    // --router-bias 0.001), 1 shared expert of 2048.
    {"deepseek-v3", 7168, 2048, Activation::swiglu, "swiglu", 256, 8, 1, 2048, 58, 3, 18432},
    // Qwen2-57B-A14B: d_model 3584, 28 layers all MoE, d_ff 2560, SwiGLU, E = 64, top-8, 1 gated shared
    // expert of d_ff 20480 (its sigmoid gate, d FLOPs per token, is not counted).
    {"qwen2-57b-a14b", 3584, 2560, Activation::swiglu, "swiglu", 64, 8, 1, 20480, 28, 0, 0},
    // OLMoE-1B-7B: d_model 2048, 16 layers all MoE, d_ff 1024, SwiGLU, E = 64, top-8, dropless
    // (--capacity-factor 0).
    {"olmoe-1b-7b", 2048, 1024, Activation::swiglu, "swiglu", 64, 8, 0, 0, 16, 0, 0},
    // Grok-1: d_model 6144, 64 layers all MoE, d_ff 32768, GeLU-GLU (?) (3 matrices: simulated as a gated
    // FFN, the same FLOPs), E = 8, top-2.
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
