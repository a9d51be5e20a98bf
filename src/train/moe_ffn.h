// The FFN of an MoE block of the language model: an FfnBlock that owns a distributed MoeLayer (router
// replicated, experts sharded over the ranks) and, optionally, DeepSeekMoE/Qwen shared experts and an
// Arctic dense residual branch, both dense FFNs applied to every token and added to the MoE output.
// Owns the branches' parameters, gradients and activations (one allocation each); forward and backward
// allocate nothing.
//
// Dimensions: N = rows = B·S (must equal the layer's tokens_per_rank), d = d_model, f = expert width,
// E experts (E_local = E/P on this rank), F = dense-branch width.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm.h"
#include "model.h"
#include "moe_layer.h"

namespace expar {

struct MoeFfnConfig {
    LayerConfig layer;            // d_model = the model's d, tokens_per_rank = B·S
    int64_t shared_experts = 0;   // N shared experts of width layer.d_ff, fused into one FFN of width N·f
    int64_t dense_branch_ff = 0;  // F: Arctic's dense FFN beside the MoE (GELU, with biases); 0 = none
};

// Throws an all-ranks error naming the option (--shared-experts, --dense-branch-ff).
void validate(const MoeFfnConfig& config, int num_ranks);

// One expert parameter tensor of this rank: E_local items of item_shape, global experts
// [first_expert, first_expert + num_local), contiguous (item i at param + i·item_count).
struct ExpertTensor {
    std::string name;                 // "h3.w1", "h3.b1", ...
    std::vector<int64_t> item_shape;  // one expert's shape, e.g. [d, f]
    int64_t item_count;
    float* param;
    float* grad;
    int64_t first_expert;
    int64_t num_local;
    int64_t num_global;
};

// A contiguous run of replicated gradients (summed over ranks by the trainer's all-reduce).
struct GradRegion {
    float* data;
    int64_t count;
};

class MoeFfn final : public FfnBlock {
   public:
    // block: the Transformer block's index (names, seeds). buffer_capacity_factor: the capacity factor
    // the layer's buffers are sized for (the roomier of training's and evaluation's, see
    // MoeLayer::set_capacity_factor); the layer starts at config.layer.capacity_factor.
    MoeFfn(const MoeFfnConfig& config,
           Comm& comm,
           ExpertCompute& experts,
           int64_t block,
           const LayerCluster* cluster,
           double buffer_capacity_factor);
    ~MoeFfn() override;

    // GPT-2-style init keyed by global indices (the same model at any rank count): router, w1, w3 and
    // the branches' first matrices N(0, init_std²), second matrices N(0, residual_std²), biases 0.
    void init_params(uint64_t seed, float init_std, float residual_std);
    // The step keys the gate's randomness (noisy-topk noise, gshard's coin).
    void set_step(int64_t step) { step_ = step; }

    void forward(float* out, const float* in, int64_t rows) override;
    void backward(float* din, const float* dout, int64_t rows) override;
    void zero_grads() override;

    MoeLayer& layer() { return *layer_; }
    const MoeLayer& layer() const { return *layer_; }
    int64_t block() const { return block_; }
    // Replicated tensors: router_w (router_noise_w), shared_{w1,b1,w2,b2,w3}, dense_{fc_w,...}.
    const std::vector<ParamTensor>& replicated_tensors() const { return replicated_; }
    const std::vector<ExpertTensor>& expert_tensors() const { return experts_; }
    // The replicated gradients as contiguous regions: the router's, then the branches' allocation.
    const std::vector<GradRegion>& replicated_grad_regions() const { return regions_; }

   private:
    struct Branch;  // one dense FFN on every row (shared experts or the dense branch)
    MoeFfnConfig config_;
    int64_t block_;
    uint64_t seed_ = 0;
    int64_t step_ = 0;
    const float* in_ = nullptr;  // the last forward's input
    std::unique_ptr<MoeLayer> layer_;
    ExpertCompute& compute_;
    std::vector<float> branch_params_, branch_grads_, branch_acts_;
    std::vector<Branch> branches_;
    std::vector<float> branch_out_;  // [N, d] a branch's output or input gradient before it is added
    std::vector<ParamTensor> replicated_;
    std::vector<ExpertTensor> experts_;
    std::vector<GradRegion> regions_;
};

}  // namespace expar
