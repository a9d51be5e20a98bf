// What the simulator simulates: a model's MoE layers (widths, activation, experts, top-k, shared experts,
// layer counts), the tokens per rank and the bytes per element. From options, or from a preset
// (presets.h). FLOP and byte counts come from the same formulas as the real expert FFN (expert_ffn.h).
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <string>

#include "config.h"
#include "expert_ffn.h"

namespace expar {

// One MoE model's shape. Widths in elements. No biases (none of the presets has expert biases).
struct ModelSpec {
    std::string name = "custom";  // preset name, or "custom"
    int64_t d_model = 0;          // d
    int64_t d_ff = 0;             // f: hidden width of one routed expert
    // swiglu stands for every gated FFN (3 matrices: SwiGLU, GeLU-GLU); gelu/relu/silu for 2 matrices.
    Activation activation = Activation::gelu;
    std::string activation_name = "gelu";  // as published ("gelu-glu" for Grok-1)
    int64_t num_experts = 0;               // E routed experts per MoE layer
    int top_k = 0;                         // k routed experts per token
    int num_shared_experts = 0;            // always-on experts per MoE layer (DeepSeek, Qwen2, Arctic)
    int64_t shared_d_ff = 0;               // hidden width of one shared expert
    int num_moe_layers = 0;
    int num_dense_layers = 0;  // layers with a dense FFN instead of an MoE block
    int64_t dense_d_ff = 0;    // their hidden width; 0 = unknown (not counted)
};

struct Workload {
    ModelSpec model;
    int64_t tokens_per_rank = 0;  // T per simulated rank per step
    int dtype_bytes = 2;          // bytes per element of tokens on the wire and of expert weights
};

// Throws an all-ranks expar::Error naming the option at fault.
void validate(const Workload& workload);

// Matrices of one FFN: 3 when gated, else 2.
int num_ffn_matrices(Activation activation);
ExpertShape expert_shape(const ModelSpec& model);
ExpertShape shared_expert_shape(const ModelSpec& model);

// Forward FLOPs (2 per multiply-add) of one routed expert on one token: expert_ffn_forward_flops(1, ...).
double expert_forward_flops_per_token(const ModelSpec& model);
// Forward FLOPs of one MoE layer per token: router (2·d·E) + k routed experts + the shared experts.
double moe_layer_forward_flops_per_token(const ModelSpec& model);
// Parameters of one routed expert [elements]: matrices · d · f.
int64_t expert_num_params(const ModelSpec& model);
// One token row on the wire [bytes]: d · dtype_bytes.
double token_bytes(const Workload& workload);

// ---------------------------------------------------------------------------------------------------
// Options. The model's E, k, d, f, activation and tokens per rank are the MoE layer's own options
// (--experts, --top-k, --d-model, --d-ff, --activation, --tokens-per-rank of options.h, in LayerConfig);
// these add the preset and the rest of the model.

struct WorkloadOptions {
    std::string model;  // preset name; empty = custom (the layer options as given)
    int shared_experts = 0;
    int64_t shared_d_ff = 0;
    int moe_layers = 1;
    int dense_layers = 0;
    int64_t dense_d_ff = 0;
    int dtype_bytes = 2;
};

boost::program_options::options_description workload_options_description(WorkloadOptions* out);

// The workload of the parsed options. With --model, the preset fills every model option the command line
// (vm) left at its default, and *layer is updated to the preset's E, k, d, f and activation, so the
// decisions (capacity, gate) use them. Throws an all-ranks expar::Error on an unknown preset or bad value.
Workload make_workload(const WorkloadOptions& options,
                       const boost::program_options::variables_map& vm,
                       LayerConfig* layer);

}  // namespace expar
