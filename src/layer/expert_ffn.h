// The expert FFN on a block of rows routed to one expert, and the expert-compute seam.
// expert_ffn_forward/backward go through BLAS (gemm) plus the vectorised activations. ExpertCompute
// is the interface a later cuBLAS backend implements; IdentityExpertCompute is a test backend.
#pragma once

#include <cstdint>

#include "config.h"

namespace expar {

// One expert's weights (views). b1/b2 are null without bias, w3 is null unless swiglu.
struct ExpertWeights {
    const float* w1;  // [d, f]
    const float* b1;  // [f]
    const float* w2;  // [f, d]
    const float* b2;  // [d]
    const float* w3;  // [d, f]
};

// One expert's gradients (views, accumulated with +=). Same nulls as ExpertWeights.
struct ExpertGrads {
    float* dw1;
    float* db1;
    float* dw2;
    float* db2;
    float* dw3;
};

// Activations saved by the forward for the backward, each [n, f]; g only for swiglu.
struct ExpertActivations {
    float* h;   // x·W1 + b1 (pre-activation)
    float* g;   // x·W3; the backward overwrites it with dL/dg
    float* a;   // act(h), or silu(h)⊙g
    float* dh;  // backward: dL/dh, kept from backward_data for backward_weights
};

struct ExpertShape {
    int64_t d_model;
    int64_t d_ff;
    Activation activation;
};

// y[n,d] = FFN(x[n,d]); fills acts.
void expert_ffn_forward(
    float* y, ExpertActivations acts, const float* x, ExpertWeights w, int64_t n, ExpertShape shape);

// The backward in two halves, so a schedule can return dx for a block of rows as soon as that block is
// done and take the weight gradients once over all of an expert's rows (the same GEMMs, in the same
// order, whatever the schedule). backward_data: dx[n,d] (overwritten) from dy[n,d]; fills acts.dh and
// turns acts.g into dL/dg. backward_weights: grads (+=) from dy, x and those.
void expert_ffn_backward_data(
    float* dx, const float* dy, ExpertActivations acts, ExpertWeights w, int64_t n, ExpertShape shape);
void expert_ffn_backward_weights(
    ExpertGrads grads, const float* dy, const float* x, ExpertActivations acts, int64_t n, ExpertShape shape);

// Both halves on one block: dx[n,d] (overwritten) and grads (+=) from dy[n,d].
void expert_ffn_backward(float* dx,
                         ExpertGrads grads,
                         const float* dy,
                         const float* x,
                         ExpertActivations acts,
                         ExpertWeights w,
                         int64_t n,
                         ExpertShape shape);

// Multiply-add count of one forward over n rows: 2·n·d·f per matrix (2 or 3 matrices).
double expert_ffn_forward_flops(int64_t n, ExpertShape shape);

// The seam between the MoE layer and whatever computes experts (BLAS on CPU now, cuBLAS later).
class ExpertCompute {
   public:
    virtual ~ExpertCompute() = default;
    virtual void forward(
        float* y, ExpertActivations acts, const float* x, ExpertWeights w, int64_t n, ExpertShape shape) = 0;
    virtual void backward_data(float* dx,
                               const float* dy,
                               ExpertActivations acts,
                               ExpertWeights w,
                               int64_t n,
                               ExpertShape shape) = 0;
    virtual void backward_weights(ExpertGrads grads,
                                  const float* dy,
                                  const float* x,
                                  ExpertActivations acts,
                                  int64_t n,
                                  ExpertShape shape) = 0;
};

class BlasExpertCompute final : public ExpertCompute {
   public:
    void forward(float* y,
                 ExpertActivations acts,
                 const float* x,
                 ExpertWeights w,
                 int64_t n,
                 ExpertShape shape) override {
        expert_ffn_forward(y, acts, x, w, n, shape);
    }
    void backward_data(float* dx,
                       const float* dy,
                       ExpertActivations acts,
                       ExpertWeights w,
                       int64_t n,
                       ExpertShape shape) override {
        expert_ffn_backward_data(dx, dy, acts, w, n, shape);
    }
    void backward_weights(ExpertGrads grads,
                          const float* dy,
                          const float* x,
                          ExpertActivations acts,
                          int64_t n,
                          ExpertShape shape) override {
        expert_ffn_backward_weights(grads, dy, x, acts, n, shape);
    }
};

// Every expert is the identity: y = x, dx = dy, no parameter gradients. For round-trip tests.
class IdentityExpertCompute final : public ExpertCompute {
   public:
    void forward(float* y,
                 ExpertActivations acts,
                 const float* x,
                 ExpertWeights w,
                 int64_t n,
                 ExpertShape shape) override;
    void backward_data(float* dx,
                       const float* dy,
                       ExpertActivations acts,
                       ExpertWeights w,
                       int64_t n,
                       ExpertShape shape) override;
    void backward_weights(
        ExpertGrads, const float*, const float*, ExpertActivations, int64_t, ExpertShape) override {}
};

}  // namespace expar
