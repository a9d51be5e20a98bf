// The Transformer language model (GPT-2 shape): token + position embeddings, L pre-LayerNorm blocks of
// causal self-attention and an FFN, final LayerNorm, LM head tied to the token embedding. Owns one
// allocation each for parameters, gradients and activations, sized at construction from (B, config);
// forward and backward allocate nothing. Each block's FFN goes through the FfnBlock seam: dense blocks
// use DenseFfn (parameters inside the model's allocation), MoE blocks get a block from outside.
//
// Dimensions: B sequences, S = seq_len, N = B·S rows, d = d_model, H heads, f = d_ff_dense, V vocab, L
// layers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace expar {

struct ModelConfig {
    int64_t vocab_size = 256;  // V
    int64_t seq_len = 64;      // S, also the number of learned positions
    int64_t d_model = 128;     // d
    int64_t num_heads = 4;     // H, must divide d
    int64_t num_layers = 4;    // L
    int64_t d_ff_dense = 512;  // f of the dense FFN blocks
    int64_t moe_every = 0;     // blocks moe_every−1, 2·moe_every−1, ... are MoE; 0 = none
    float init_std = 0.02f;    // GPT-2 init: N(0, init_std²), residual projections / sqrt(2L)
};

// Throws an all-ranks expar::Error naming the offending option (--vocab-size, --d-model, ...).
void validate(const ModelConfig& config);

// True when block `layer` (0-based) has an MoE FFN: every moe_every-th block, counting from 1, so
// moe_every = 2 gives Switch/GShard's alternation with a dense first block.
bool model_layer_is_moe(const ModelConfig& config, int64_t layer);

// ------------------------------------------------------------------------------------------------
// Parameters: named views into one allocation. The same struct holds the gradients.

template <typename T>
struct LayerParamViews {
    T* ln1_w;        // [d]
    T* ln1_b;        // [d]
    T* qkv_w;        // [d, 3d]  columns [q | k | v]
    T* qkv_b;        // [3d]
    T* attn_proj_w;  // [d, d]
    T* attn_proj_b;  // [d]
    T* ln2_w;        // [d]
    T* ln2_b;        // [d]
    T* ffn_fc_w;     // [d, f]   dense blocks only: null in MoE blocks
    T* ffn_fc_b;     // [f]
    T* ffn_proj_w;   // [f, d]
    T* ffn_proj_b;   // [d]
};

template <typename T>
struct ParamViews {
    T* wte;  // [V, d]  token embedding, also the LM head
    T* wpe;  // [S, d]
    std::vector<LayerParamViews<T>> layers;
    T* lnf_w;  // [d]
    T* lnf_b;  // [d]
};
using ModelParams = ParamViews<float>;

// One named parameter tensor, for checkpoints, dumps, the optimizer and the gradient all-reduce.
struct ParamTensor {
    std::string name;            // "wte", "wpe", "h3.qkv_w", ..., "lnf_b"
    std::vector<int64_t> shape;  // row-major
    int64_t offset;              // floats from the start of the parameter (and gradient) allocation
    int64_t count;               // product of shape
    float* param;
    float* grad;
    bool replicated;  // identical on every rank (data-parallel, all-reduced); false = sharded (experts)
};

// Points views into `base` in storage order (base may be null: views are null, only `layout` is
// wanted). When layout is not null it receives every tensor's name, shape, offset and count, with
// param/grad pointers null. The storage order is the order of the ParamTensor list.
template <typename T>
ParamViews<T> point_params(const ModelConfig& config, T* base, std::vector<ParamTensor>* layout);

// Floats in the model's own parameter allocation (MoE blocks' parameters are not in it).
int64_t gpt_num_params(const ModelConfig& config);

// ------------------------------------------------------------------------------------------------
// The FFN seam.

// The FFN of one block on `rows` token rows of width d. The block keeps whatever its backward needs,
// except its input, which the model keeps alive and unchanged until the matching backward.
class FfnBlock {
   public:
    virtual ~FfnBlock() = default;
    // out [rows, d] = FFN(in [rows, d]).
    virtual void forward(float* out, const float* in, int64_t rows) = 0;
    // din [rows, d] overwritten, from dout [rows, d]; parameter gradients accumulate (+=).
    virtual void backward(float* din, const float* dout, int64_t rows) = 0;
    virtual void zero_grads() = 0;
};

// fc (d → f) → gelu → proj (f → d). Parameters and gradients are views into the model's allocations;
// h and a are this block's saved activations; dh is scratch shared by every dense block.
class DenseFfn final : public FfnBlock {
   public:
    DenseFfn(const LayerParamViews<float>& params,
             const LayerParamViews<float>& grads,
             float* h,
             float* a,
             float* dh,
             int64_t d,
             int64_t f,
             int64_t max_rows);
    void forward(float* out, const float* in, int64_t rows) override;
    void backward(float* din, const float* dout, int64_t rows) override;
    void zero_grads() override;

   private:
    LayerParamViews<float> params_, grads_;
    float* h_;   // [max_rows, f] fc output (gelu input)
    float* a_;   // [max_rows, f] gelu output
    float* dh_;  // [max_rows, f] scratch
    int64_t d_, f_, max_rows_;
    const float* in_ = nullptr;  // the last forward's input
};

// ------------------------------------------------------------------------------------------------
// Activations: named views into one allocation.

struct LayerActivations {
    float* ln1;        // [N, d]
    float* ln1_mean;   // [N]
    float* ln1_rstd;   // [N]
    float* qkv;        // [N, 3d]
    float* att;        // [B, H, S, S] attention probabilities
    float* atty;       // [N, d] attention output before the projection
    float* resid_mid;  // [N, d] x + attention branch
    float* ln2;        // [N, d] the FFN's input
    float* ln2_mean;   // [N]
    float* ln2_rstd;   // [N]
    float* ffn_h;      // [N, f] dense blocks only (DenseFfn's h): null in MoE blocks
    float* ffn_a;      // [N, f] dense blocks only (DenseFfn's a)
    float* resid_out;  // [N, d] resid_mid + FFN branch: the next block's input
};

struct ModelActivations {
    float* encoded;  // [N, d] embeddings: block 0's input
    std::vector<LayerActivations> layers;
    float* lnf;       // [N, d]
    float* lnf_mean;  // [N]
    float* lnf_rstd;  // [N]
    float* logits;    // [N, V]; after gpt_backward it holds dlogits instead
    float* lse;       // [N] log-sum-exp of each logits row
    float* losses;    // [N] per-row cross-entropy
    float* dlosses;   // [N] dL/dlosses: weight / Σ weights
    // Scratch reused by every block (not needed by the backward).
    float* branch;        // [N, d] attention projection or FFN output before its residual add
    float* attn_scratch;  // attention_scratch_floats(S, d, H)
    // Activation gradients, reused by every block in the backward.
    float* dres;     // [N, d] dL/d(residual stream) at the current depth
    float* dbranch;  // [N, d] a LayerNorm's input gradient, before it joins dres
    float* dnorm;    // [N, d] dL/d(LayerNorm output), also dL/d(atty)
    float* dqkv;     // [N, 3d]
    float* dffn_h;   // [N, f] DenseFfn scratch
};

// ------------------------------------------------------------------------------------------------
// The model.

struct GptModel {
    GptModel(const ModelConfig& config, int64_t batch_size);
    GptModel(const GptModel&) = delete;  // views point into its own allocations
    GptModel& operator=(const GptModel&) = delete;

    ModelConfig config;
    int64_t batch_size;  // B
    int64_t num_rows;    // N = B·S

    std::vector<float> param_memory, grad_memory, act_memory;
    ModelParams params, grads;
    std::vector<ParamTensor> tensors;  // every parameter tensor, storage order
    ModelActivations acts;

    std::vector<std::unique_ptr<DenseFfn>> dense_ffns;  // [L]; null in MoE blocks
    std::vector<FfnBlock*> ffn;                         // [L] the block each layer calls

    std::vector<int32_t> tokens, targets;  // [N] copies of the last forward's inputs
    bool has_targets = false;              // the last forward computed a loss
    bool backward_ready = false;           // a forward with targets ran since the last backward
    float loss = 0.0f;
};

// GPT-2 init, deterministic from seed (src/base/rng.h streams kStreamWte..kStreamFfnProjW, indexed by
// element within the tensor stacked over layers): matrices and embeddings N(0, init_std²), the residual
// projections (attn_proj_w, ffn_proj_w) N(0, (init_std/sqrt(2L))²), LayerNorm weights 1, biases 0.
// MoE blocks' parameters are theirs to initialise.
void gpt_init_params(GptModel& model, uint64_t seed);

// Puts an FFN block (not owned) into an MoE layer; throws unless model_layer_is_moe(layer).
void gpt_set_ffn(GptModel& model, int64_t layer, FfnBlock* block);

// tokens, targets [B, S] in [0, V); targets may be null (logits only, returns NaN).
// loss_weights [B, S] or null (all 1): loss = Σ w·loss / Σ w, the mean over the weighted targets.
// Returns the loss and keeps it in model.loss.
float gpt_forward(GptModel& model, const int32_t* tokens, const int32_t* targets, const float* loss_weights);

// Zeroes every gradient: the model's allocation and every FFN block's.
void gpt_zero_grads(GptModel& model);

// Gradients of the last forward's loss, accumulated (+=) into model.grads and the FFN blocks'.
// Needs a forward with targets since the last backward (it turns logits into dlogits).
void gpt_backward(GptModel& model);

}  // namespace expar
