#include "expert_ffn.h"

#include <algorithm>

#include "activation.h"
#include "blas.h"

namespace expar {

namespace {
// out[n, width] = broadcast of bias[width], or zero without bias; the GEMM then adds with beta = 1.
void fill_rows(float* out, const float* bias, int64_t n, int64_t width) {
    if (bias == nullptr) {
        std::fill(out, out + n * width, 0.0f);
        return;
    }
    for (int64_t r = 0; r < n; ++r) std::copy(bias, bias + width, out + r * width);
}

// db[width] += column sums of g[n, width].
void add_column_sums(float* db, const float* g, int64_t n, int64_t width) {
    if (db == nullptr) return;
    for (int64_t r = 0; r < n; ++r) {
        const float* row = g + r * width;
        for (int64_t c = 0; c < width; ++c) db[c] += row[c];
    }
}
}  // namespace

void expert_ffn_forward(
    float* y, ExpertActivations acts, const float* x, ExpertWeights w, int64_t n, ExpertShape shape) {
    if (n == 0) return;
    const int64_t d = shape.d_model, f = shape.d_ff;
    fill_rows(acts.h, w.b1, n, f);
    gemm(false, false, n, f, d, 1.0f, x, w.w1, 1.0f, acts.h);  // h = x·W1 + b1   [n,f]
    if (shape.activation == Activation::swiglu) {
        gemm(false, false, n, f, d, 1.0f, x, w.w3, 0.0f, acts.g);  // g = x·W3   [n,f]
    }
    activation_forward(shape.activation, acts.h, acts.g, acts.a, n * f);
    fill_rows(y, w.b2, n, d);
    gemm(false, false, n, d, f, 1.0f, acts.a, w.w2, 1.0f, y);  // y = a·W2 + b2   [n,d]
}

void expert_ffn_backward_data(
    float* dx, const float* dy, ExpertActivations acts, ExpertWeights w, int64_t n, ExpertShape shape) {
    if (n == 0) return;
    const int64_t d = shape.d_model, f = shape.d_ff;
    float* dh = acts.dh;
    gemm(false, true, n, f, d, 1.0f, dy, w.w2, 0.0f, dh);  // da = dy·W2ᵀ   [n,f], then dh in place
    float* dg = acts.g;  // swiglu: dg overwrites g element by element (activation_backward allows it)
    activation_backward(shape.activation, acts.h, acts.g, dh, dg, n * f);
    gemm(false, true, n, d, f, 1.0f, dh, w.w1, 0.0f, dx);  // dx = dh·W1ᵀ   [n,d]
    if (shape.activation == Activation::swiglu)
        gemm(false, true, n, d, f, 1.0f, dg, w.w3, 1.0f, dx);  // += dg·W3ᵀ
}

void expert_ffn_backward_weights(ExpertGrads grads,
                                 const float* dy,
                                 const float* x,
                                 ExpertActivations acts,
                                 int64_t n,
                                 ExpertShape shape) {
    if (n == 0) return;
    const int64_t d = shape.d_model, f = shape.d_ff;
    gemm(true, false, f, d, n, 1.0f, acts.a, dy, 1.0f, grads.dw2);  // dW2 += aᵀ·dy   [f,d]
    add_column_sums(grads.db2, dy, n, d);
    gemm(true, false, d, f, n, 1.0f, x, acts.dh, 1.0f, grads.dw1);  // dW1 += xᵀ·dh   [d,f]
    add_column_sums(grads.db1, acts.dh, n, f);
    if (shape.activation == Activation::swiglu)
        gemm(true, false, d, f, n, 1.0f, x, acts.g, 1.0f, grads.dw3);  // dW3 += xᵀ·dg
}

void expert_ffn_backward(float* dx,
                         ExpertGrads grads,
                         const float* dy,
                         const float* x,
                         ExpertActivations acts,
                         ExpertWeights w,
                         int64_t n,
                         ExpertShape shape) {
    expert_ffn_backward_data(dx, dy, acts, w, n, shape);
    expert_ffn_backward_weights(grads, dy, x, acts, n, shape);
}

double expert_ffn_forward_flops(int64_t n, ExpertShape shape) {
    const double matrices = shape.activation == Activation::swiglu ? 3.0 : 2.0;
    return 2.0 * matrices * static_cast<double>(n) * static_cast<double>(shape.d_model) *
           static_cast<double>(shape.d_ff);
}

void IdentityExpertCompute::forward(
    float* y, ExpertActivations, const float* x, ExpertWeights, int64_t n, ExpertShape shape) {
    std::copy(x, x + n * shape.d_model, y);
}

void IdentityExpertCompute::backward_data(
    float* dx, const float* dy, ExpertActivations, ExpertWeights, int64_t n, ExpertShape shape) {
    std::copy(dy, dy + n * shape.d_model, dx);
}

}  // namespace expar
