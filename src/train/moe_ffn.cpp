#include "moe_ffn.h"

#include <algorithm>
#include <cstring>

#include "check.h"
#include "rng.h"
#include "synthetic.h"

namespace expar {

void validate(const MoeFfnConfig& c, int num_ranks) {
    validate(c.layer, num_ranks);
    EXPAR_REQUIRE(c.shared_experts >= 0, "--shared-experts must be >= 0 (got " << c.shared_experts << ")");
    EXPAR_REQUIRE(c.dense_branch_ff >= 0,
                  "--dense-branch-ff must be >= 0 (0 = none), got " << c.dense_branch_ff);
}

// A dense FFN over all N rows: views into MoeFfn's branch allocations.
struct MoeFfn::Branch {
    std::string prefix;  // "shared_" or "dense_"
    ExpertShape shape;
    ExpertWeights weights;
    ExpertGrads grads;
    ExpertActivations acts;
    uint64_t stream_w1, stream_w2, stream_w3;
};

MoeFfn::MoeFfn(const MoeFfnConfig& config,
               Comm& comm,
               ExpertCompute& experts,
               int64_t block,
               const LayerCluster* cluster,
               double buffer_capacity_factor)
    : config_(config), block_(block), compute_(experts) {
    validate(config_, comm.size());
    const LayerConfig& c = config_.layer;
    LayerConfig sized = c;
    sized.capacity_factor = buffer_capacity_factor;
    layer_ = std::make_unique<MoeLayer>(sized, comm, experts, static_cast<int>(block), cluster);
    layer_->set_capacity_factor(c.capacity_factor);

    const int64_t N = c.tokens_per_rank, d = c.d_model, f = c.d_ff, E = c.num_experts;
    const int64_t EL = layer_->num_local_experts(), first = comm.rank() * EL;
    const std::string name = "h" + std::to_string(block) + ".";

    // The router's replicated tensors lead the layer's allocation (moe_layer.h: router_w, router_noise_w).
    const LayerTensors p = layer_->params(), g = layer_->grads();
    replicated_.push_back(ParamTensor{name + "router_w", {d, E}, 0, d * E, p.router_w, g.router_w, true});
    if (p.router_noise_w)
        replicated_.push_back(ParamTensor{
            name + "router_noise_w", {d, E}, d * E, d * E, p.router_noise_w, g.router_noise_w, true});
    regions_.push_back(GradRegion{g.router_w, (p.router_noise_w ? 2 : 1) * d * E});
    auto expert = [&](const char* kind, std::vector<int64_t> shape, float* param, float* grad) {
        if (param == nullptr) return;
        int64_t count = 1;
        for (int64_t extent : shape) count *= extent;
        experts_.push_back(ExpertTensor{name + kind, shape, count, param, grad, first, EL, E});
    };
    expert("w1", {d, f}, p.w1, g.w1);
    expert("b1", {f}, p.b1, g.b1);
    expert("w2", {f, d}, p.w2, g.w2);
    expert("b2", {d}, p.b2, g.b2);
    expert("w3", {d, f}, p.w3, g.w3);

    // Branches: shared experts (the experts' activation and biases, width N_shared·f), dense branch (GELU).
    struct Spec {
        const char* prefix;
        ExpertShape shape;
        bool bias;
        uint64_t w1, w2, w3;
    };
    std::vector<Spec> specs;
    if (config_.shared_experts > 0)
        specs.push_back(Spec{"shared_", ExpertShape{d, config_.shared_experts * f, c.activation},
                             c.expert_bias, kStreamSharedW1, kStreamSharedW2, kStreamSharedW3});
    if (config_.dense_branch_ff > 0)
        specs.push_back(Spec{"dense_", ExpertShape{d, config_.dense_branch_ff, Activation::gelu}, true,
                             kStreamDenseBranchW1, kStreamDenseBranchW2, 0});
    // Size table: w1 [d,w], b1 [w], w2 [w,d], b2 [d], w3 [d,w] per branch; activations h, g, a, dh [N,w].
    int64_t num_params = 0, num_acts = 0;
    for (const Spec& s : specs) {
        const int64_t w = s.shape.d_ff, gated = has_gate_matrix(s.shape.activation);
        num_params += d * w + (s.bias ? w : 0) + w * d + (s.bias ? d : 0) + (gated ? d * w : 0);
        num_acts += (3 + gated) * N * w;
    }
    branch_params_.assign(num_params, 0.0f);
    branch_grads_.assign(num_params, 0.0f);
    branch_acts_.assign(num_acts, 0.0f);
    branch_out_.assign(specs.empty() ? 0 : N * d, 0.0f);
    int64_t offset = 0, act_offset = 0;
    for (const Spec& s : specs) {
        const int64_t w = s.shape.d_ff;
        const bool gated = has_gate_matrix(s.shape.activation);
        float* views[2][5] = {};
        auto take = [&](const char* kind, std::vector<int64_t> shape, bool present, int slot) {
            if (!present) return;
            int64_t count = 1;
            for (int64_t extent : shape) count *= extent;
            views[0][slot] = branch_params_.data() + offset;
            views[1][slot] = branch_grads_.data() + offset;
            replicated_.push_back(ParamTensor{name + s.prefix + kind, shape, offset, count, views[0][slot],
                                              views[1][slot], true});
            offset += count;
        };
        take("w1", {d, w}, true, 0);
        take("b1", {w}, s.bias, 1);
        take("w2", {w, d}, true, 2);
        take("b2", {d}, s.bias, 3);
        take("w3", {d, w}, gated, 4);
        auto act = [&](bool present) {
            if (!present) return static_cast<float*>(nullptr);
            float* view = branch_acts_.data() + act_offset;
            act_offset += N * w;
            return view;
        };
        ExpertActivations acts;
        acts.h = act(true);
        acts.g = act(gated);
        acts.a = act(true);
        acts.dh = act(true);
        branches_.push_back(Branch{
            s.prefix, s.shape, ExpertWeights{views[0][0], views[0][1], views[0][2], views[0][3], views[0][4]},
            ExpertGrads{views[1][0], views[1][1], views[1][2], views[1][3], views[1][4]}, acts, s.w1, s.w2,
            s.w3});
    }
    if (num_params > 0) regions_.push_back(GradRegion{branch_grads_.data(), num_params});
}

MoeFfn::~MoeFfn() = default;

void MoeFfn::init_params(uint64_t seed, float init_std, float residual_std) {
    const LayerConfig& c = config_.layer;
    const int64_t d = c.d_model, f = c.d_ff, E = c.num_experts;
    seed_ = rng_bits(seed, kStreamMoeBlock, static_cast<uint64_t>(block_));
    const LayerTensors p = layer_->params();
    const int64_t EL = layer_->num_local_experts(), first = layer_->rank() * EL;
    synthetic_fill(p.router_w, seed_, kStreamRouterW, 0, d * E, init_std);
    if (p.router_noise_w) synthetic_fill(p.router_noise_w, seed_, kStreamRouterNoiseW, 0, d * E, init_std);
    synthetic_fill(p.w1, seed_, kStreamW1, first * d * f, EL * d * f, init_std);
    synthetic_fill(p.w2, seed_, kStreamW2, first * f * d, EL * f * d, residual_std);
    if (p.w3) synthetic_fill(p.w3, seed_, kStreamW3, first * d * f, EL * d * f, init_std);
    if (p.b1) std::fill(p.b1, p.b1 + EL * f, 0.0f);
    if (p.b2) std::fill(p.b2, p.b2 + EL * d, 0.0f);
    std::fill(branch_params_.begin(), branch_params_.end(), 0.0f);
    for (const Branch& b : branches_) {
        const int64_t w = b.shape.d_ff;
        synthetic_fill(const_cast<float*>(b.weights.w1), seed_, b.stream_w1, 0, d * w, init_std);
        synthetic_fill(const_cast<float*>(b.weights.w2), seed_, b.stream_w2, 0, w * d, residual_std);
        if (b.weights.w3)
            synthetic_fill(const_cast<float*>(b.weights.w3), seed_, b.stream_w3, 0, d * w, init_std);
    }
}

void MoeFfn::forward(float* out, const float* in, int64_t rows) {
    const int64_t d = config_.layer.d_model;
    EXPAR_REQUIRE(rows == config_.layer.tokens_per_rank,
                  "MoE block " << block_ << " gets " << rows << " rows per rank, but its layer was built for "
                               << config_.layer.tokens_per_rank << " tokens per rank (B·S)");
    in_ = in;
    layer_->forward(out, in, step_, seed_);
    for (Branch& b : branches_) {
        compute_.forward(branch_out_.data(), b.acts, in, b.weights, rows, b.shape);
        for (int64_t i = 0; i < rows * d; ++i) out[i] += branch_out_[i];
    }
}

void MoeFfn::backward(float* din, const float* dout, int64_t rows) {
    const int64_t d = config_.layer.d_model;
    EXPAR_ASSERT(rows == config_.layer.tokens_per_rank);
    layer_->backward(din, dout);
    const float* in = in_;  // the model keeps the forward's input alive (FfnBlock contract)
    for (Branch& b : branches_) {
        compute_.backward_data(branch_out_.data(), dout, b.acts, b.weights, rows, b.shape);
        compute_.backward_weights(b.grads, dout, in, b.acts, rows, b.shape);
        for (int64_t i = 0; i < rows * d; ++i) din[i] += branch_out_[i];
    }
}

void MoeFfn::zero_grads() {
    layer_->zero_grads();
    std::fill(branch_grads_.begin(), branch_grads_.end(), 0.0f);
}

}  // namespace expar
