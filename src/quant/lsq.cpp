#include "limpq/quant/lsq.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "lsq_kernel.h"

#ifdef LIMPQ_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "lsq_cuda.h"
#endif

namespace limpq::quant {
namespace {

// The variants this CPU can run, best first.
std::vector<const kernels::LsqKernels*> runnable_kernels() {
  std::vector<const kernels::LsqKernels*> out;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    out.push_back(&kernels::avx512_kernels());
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(&kernels::avx2_kernels());
#endif
  out.push_back(&kernels::generic_kernels());
  return out;
}

const kernels::LsqKernels* runnable_kernel(const std::string& isa) {
  for (const auto* k : runnable_kernels()) {
    if (isa == k->isa) return k;
  }
  return nullptr;
}

std::string runnable_isas() {
  std::string names;
  for (const auto* k : runnable_kernels()) names += std::string(names.empty() ? "" : ", ") + k->isa;
  return names;
}

// The best variant, or the one $LIMPQ_CPU_CAPABILITY names (as ATen's
// ATEN_CPU_CAPABILITY does), until lsq_use_cpu_kernel_isa changes it.
std::atomic<const kernels::LsqKernels*>& chosen_kernels() {
  static std::atomic<const kernels::LsqKernels*> chosen{[] {
    const char* forced = std::getenv("LIMPQ_CPU_CAPABILITY");
    if (forced == nullptr || *forced == '\0') return runnable_kernels().front();
    const auto* k = runnable_kernel(forced);
    TORCH_CHECK(k != nullptr, "LIMPQ_CPU_CAPABILITY=", forced, ": this CPU runs ", runnable_isas());
    return k;
  }()};
  return chosen;
}

const kernels::LsqKernels& cpu_kernels() { return *chosen_kernels().load(std::memory_order_relaxed); }

// Elements per parallel task: large enough to amortise scheduling.
constexpr int64_t kGrain = 32768;

void check_args(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range) {
  TORCH_CHECK(range.qn < range.qp, "lsq_fake_quant: empty range [", range.qn, ", ", range.qp, "]");
  TORCH_CHECK(step.numel() == 1 || (x.dim() >= 1 && step.dim() == 1 && step.size(0) == x.size(0)),
              "lsq_fake_quant: step must be a scalar or hold one value per channel (", x.dim() ? x.size(0) : 0,
              "), got shape ", step.sizes());
  TORCH_CHECK(step.device() == x.device(), "lsq_fake_quant: step is on ", step.device(), " but x is on ", x.device());
}

// Per-channel steps broadcast along dim 0.
torch::Tensor broadcast_step(const torch::Tensor& step, const torch::Tensor& x) {
  if (step.numel() == 1 && step.dim() <= 1) return step.reshape({});
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = step.size(0);
  return step.reshape(shape);
}

// ---- CPU: the vectorised kernels, parallel over cores ----------------------

// relu_out (when not null) also receives relu(x) (per-tensor steps only).
torch::Tensor cpu_forward(const torch::Tensor& x, const torch::Tensor& step, float qn, float qp,
                          torch::Tensor* relu_out = nullptr) {
  torch::Tensor y = torch::empty_like(x);
  const auto& k = cpu_kernels();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  if (step.numel() == 1) {
    float* rp = nullptr;
    if (relu_out != nullptr) {
      *relu_out = torch::empty_like(x);
      rp = relu_out->data_ptr<float>();
    }
    const float s = step.item<float>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      k.forward(xp + begin, yp + begin, rp ? rp + begin : nullptr, end - begin, s, qn, qp);
    });
    return y;
  }
  TORCH_CHECK(relu_out == nullptr, "lsq_fake_quant: a ReLU output needs a per-tensor step");
  const int64_t channels = step.numel();
  const int64_t inner = x.numel() / channels;
  const float* sp = step.data_ptr<float>();
  at::parallel_for(0, channels, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t c = begin; c < end; ++c) {
                       k.forward(xp + c * inner, yp + c * inner, nullptr, inner, sp[c], qn, qp);
                     }
                   });
  return y;
}

// Returns {dx (undefined unless need_dx), dstep (scaled, shaped like step)}.
// relu_grad (relu_input only, per-tensor steps; may be undefined): the
// gradient of the ReLU's output from its other uses, laid out like x.
std::pair<torch::Tensor, torch::Tensor> cpu_backward(const torch::Tensor& x, const torch::Tensor& step,
                                                     const torch::Tensor& g, bool need_dx, float qn, float qp,
                                                     double grad_scale, bool relu_input,
                                                     const torch::Tensor& relu_grad = {}) {
  torch::Tensor dx = need_dx ? torch::empty_like(x) : torch::Tensor();
  const auto& k = cpu_kernels();
  const float* xp = x.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const float* rgp = relu_grad.defined() ? relu_grad.data_ptr<float>() : nullptr;
  float* dxp = need_dx ? dx.data_ptr<float>() : nullptr;
  if (step.numel() == 1) {
    const float s = step.item<float>();
    const int64_t n = x.numel();
    const int64_t tasks = std::max<int64_t>(1, (n + kGrain - 1) / kGrain);
    std::vector<double> partial(tasks, 0.0);
    at::parallel_for(0, tasks, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        const int64_t begin = t * kGrain, end = std::min(n, begin + kGrain);
        partial[t] = k.backward(xp + begin, gp + begin, rgp ? rgp + begin : nullptr, dxp ? dxp + begin : nullptr,
                                end - begin, s, qn, qp, relu_input);
      }
    });
    double sum = 0.0;
    for (double p : partial) sum += p;  // fixed order: deterministic
    return {dx, torch::full(step.sizes(), sum * grad_scale, step.options())};
  }
  TORCH_CHECK(rgp == nullptr, "lsq_fake_quant: a ReLU output needs a per-tensor step");
  const int64_t channels = step.numel();
  const int64_t inner = x.numel() / channels;
  const float* sp = step.data_ptr<float>();
  torch::Tensor dstep = torch::empty_like(step);
  float* dsp = dstep.data_ptr<float>();
  at::parallel_for(0, channels, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t c = begin; c < end; ++c) {
                       const double sum = k.backward(xp + c * inner, gp + c * inner, nullptr,
                                                     dxp ? dxp + c * inner : nullptr, inner, sp[c], qn, qp, relu_input);
                       dsp[c] = static_cast<float>(sum * grad_scale);
                     }
                   });
  return {dx, dstep};
}

// ---- CUDA: lsq_kernel_cuda.cu on the current stream -------------------------

#ifdef LIMPQ_WITH_CUDA
void check_cuda(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "lsq_fake_quant: CUDA ", what, " kernel failed: ", cudaGetErrorString(status));
}

torch::Tensor cuda_forward(const torch::Tensor& x, const torch::Tensor& step, float qn, float qp) {
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor y = torch::empty_like(x);
  const int64_t channels = step.numel();
  check_cuda(kernels::cuda::forward(x.data_ptr<float>(), y.data_ptr<float>(), step.data_ptr<float>(), channels,
                                    x.numel() / channels, qn, qp, c10::cuda::getCurrentCUDAStream()),
             "forward");
  return y;
}

std::pair<torch::Tensor, torch::Tensor> cuda_backward(const torch::Tensor& x, const torch::Tensor& step,
                                                      const torch::Tensor& g, bool need_dx, float qn, float qp,
                                                      double grad_scale) {
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor dx = need_dx ? torch::empty_like(x) : torch::Tensor();
  const int64_t channels = step.numel();
  const int64_t inner = x.numel() / channels;
  torch::Tensor partial =
      torch::empty({channels, kernels::cuda::backward_blocks(channels, inner)}, x.options().dtype(torch::kFloat64));
  check_cuda(kernels::cuda::backward(x.data_ptr<float>(), g.data_ptr<float>(),
                                     need_dx ? dx.data_ptr<float>() : nullptr, partial.data_ptr<double>(),
                                     step.data_ptr<float>(), channels, inner, qn, qp,
                                     c10::cuda::getCurrentCUDAStream()),
             "backward");
  // ATen's reductions do not use atomics: the same partials give the same sum.
  torch::Tensor dstep = (partial.sum(1) * grad_scale).to(torch::kFloat32).reshape(step.sizes());
  return {dx, dstep};
}
#endif

// Saves what the Functions' backward passes read. Returns x dense in its own
// memory format (NCHW or channels-last: the kernels are element-wise over
// memory, and dY is laid out the same way in backward) and the step.
std::pair<torch::Tensor, torch::Tensor> save_for_lsq_backward(torch::autograd::AutogradContext* ctx,
                                                              const torch::Tensor& x_in,
                                                              const torch::Tensor& step_in, int64_t qn, int64_t qp,
                                                              double grad_scale) {
  torch::Tensor x = x_in.contiguous(x_in.suggest_memory_format());
  torch::Tensor step = step_in.detach().contiguous();
  ctx->save_for_backward({x, step});
  ctx->saved_data["qn"] = qn;
  ctx->saved_data["qp"] = qp;
  ctx->saved_data["grad_scale"] = grad_scale;
  return {std::move(x), std::move(step)};
}

// relu_input: x is a ReLU's input and the function quantizes its output (CPU
// only, qn = 0; see the kernels' kReluInput).
class LsqFakeQuantFunction : public torch::autograd::Function<LsqFakeQuantFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& step_in, int64_t qn, int64_t qp, double grad_scale,
                               bool relu_input) {
    const auto [x, step] = save_for_lsq_backward(ctx, x_in, step_in, qn, qp, grad_scale);
    ctx->saved_data["relu_input"] = relu_input;
    const float fqn = static_cast<float>(qn), fqp = static_cast<float>(qp);
#ifdef LIMPQ_WITH_CUDA
    if (x.is_cuda()) return cuda_forward(x, step, fqn, fqp);
#endif
    return cpu_forward(x, step, fqn, fqp);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& step = saved[1];
    const float fqn = static_cast<float>(ctx->saved_data["qn"].toInt());
    const float fqp = static_cast<float>(ctx->saved_data["qp"].toInt());
    const double grad_scale = ctx->saved_data["grad_scale"].toDouble();
    const bool relu_input = ctx->saved_data["relu_input"].toBool();
    const torch::Tensor g = grads[0].contiguous(x.suggest_memory_format());
    const bool need_dx = ctx->needs_input_grad(0);
#ifdef LIMPQ_WITH_CUDA
    TORCH_CHECK(!(x.is_cuda() && relu_input), "lsq_fake_quant: the ReLU-input kernel is CPU only");
    auto [dx, dstep] = x.is_cuda() ? cuda_backward(x, step, g, need_dx, fqn, fqp, grad_scale)
                                   : cpu_backward(x, step, g, need_dx, fqn, fqp, grad_scale, relu_input);
#else
    auto [dx, dstep] = cpu_backward(x, step, g, need_dx, fqn, fqp, grad_scale, relu_input);
#endif
    return {dx, dstep, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// {relu(x), LSQ(relu(x))} from one pass over x, and one pass back (CPU,
// per-tensor step, qn = 0): for a ReLU whose output is also used elsewhere,
// such as a residual block's output feeding both the next convolution and
// the shortcut.
class ReluLsqFakeQuantFunction : public torch::autograd::Function<ReluLsqFakeQuantFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                                                const torch::Tensor& step_in, int64_t qn, int64_t qp,
                                                double grad_scale) {
    const auto [x, step] = save_for_lsq_backward(ctx, x_in, step_in, qn, qp, grad_scale);
    // An unused output's gradient stays undefined instead of a tensor of zeros.
    ctx->set_materialize_grads(false);
    torch::Tensor relu_out;
    torch::Tensor y = cpu_forward(x, step, static_cast<float>(qn), static_cast<float>(qp), &relu_out);
    return {relu_out, y};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& step = saved[1];
    const auto format = x.suggest_memory_format();
    const torch::Tensor relu_grad = grads[0].defined() ? grads[0].contiguous(format) : torch::Tensor();
    const torch::Tensor g = grads[1].defined() ? grads[1].contiguous(format) : torch::zeros_like(x);
    auto [dx, dstep] = cpu_backward(x, step, g, ctx->needs_input_grad(0),
                                    static_cast<float>(ctx->saved_data["qn"].toInt()),
                                    static_cast<float>(ctx->saved_data["qp"].toInt()),
                                    ctx->saved_data["grad_scale"].toDouble(), /*relu_input=*/true, relu_grad);
    return {dx, dstep, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

bool has_fused_kernel(const torch::Device& device) {
#ifdef LIMPQ_WITH_CUDA
  if (device.is_cuda()) return true;
#endif
  return device.is_cpu();
}

// The fused Function runs this tensor (else the composed-op reference).
bool fused_kernel_applies(const torch::Tensor& x, const torch::Tensor& step) {
  return has_fused_kernel(x.device()) && x.scalar_type() == torch::kFloat32 &&
         step.scalar_type() == torch::kFloat32 && x.numel() > 0;
}

}  // namespace

QuantRange QuantRange::of(int64_t bits, bool is_signed) {
  TORCH_CHECK(bits >= 1 && bits <= 16, "QuantRange: bits must be in 1..16, got ", bits);
  if (is_signed) {
    TORCH_CHECK(bits >= 2, "QuantRange: a signed range needs at least 2 bits, got ", bits);
    return {-(int64_t(1) << (bits - 1)), (int64_t(1) << (bits - 1)) - 1};
  }
  return {0, (int64_t(1) << bits) - 1};
}

double lsq_grad_scale(int64_t numel, const QuantRange& range) {
  TORCH_CHECK(numel > 0, "lsq_grad_scale: numel must be positive, got ", numel);
  return 1.0 / std::sqrt(static_cast<double>(numel) * static_cast<double>(range.qp));
}

torch::Tensor lsq_fake_quant_reference(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range,
                                       double grad_scale) {
  check_args(x, step, range);
  // Value exactly s, gradient scaled by grad_scale (LSQ's grad_scale trick,
  // written so that the forward value is bitwise s).
  torch::Tensor s = broadcast_step(step, x);
  const torch::Tensor scaled = s * grad_scale;
  s = s.detach() + (scaled - scaled.detach());
  torch::Tensor v = torch::clamp(x / s, static_cast<double>(range.qn), static_cast<double>(range.qp));
  // Round half to even with a straight-through gradient.
  v = v + (torch::round(v) - v).detach();
  return v * s;
}

torch::Tensor lsq_fake_quant(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range,
                             double grad_scale) {
  check_args(x, step, range);
  if (!fused_kernel_applies(x, step)) return lsq_fake_quant_reference(x, step, range, grad_scale);
  return LsqFakeQuantFunction::apply(x, step, range.qn, range.qp, grad_scale, /*relu_input=*/false);
}

torch::Tensor lsq_fake_quant_of_relu(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range,
                                     double grad_scale) {
  check_args(x, step, range);
  TORCH_CHECK(range.qn == 0, "lsq_fake_quant_of_relu: needs an unsigned range, got [", range.qn, ", ", range.qp,
              "]");
  // The CUDA kernel has no ReLU-input variant yet: ReLU, then its kernel.
  if (!x.is_cpu() || !fused_kernel_applies(x, step)) return lsq_fake_quant(torch::relu(x), step, range, grad_scale);
  return LsqFakeQuantFunction::apply(x, step, range.qn, range.qp, grad_scale, /*relu_input=*/true);
}

ReluAndQuantized relu_and_lsq_fake_quant(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range,
                                         double grad_scale) {
  check_args(x, step, range);
  TORCH_CHECK(range.qn == 0, "relu_and_lsq_fake_quant: needs an unsigned range, got [", range.qn, ", ", range.qp,
              "]");
  if (!x.is_cpu() || step.numel() != 1 || !fused_kernel_applies(x, step)) {
    torch::Tensor relu = torch::relu(x);
    return {relu, lsq_fake_quant(relu, step, range, grad_scale)};
  }
  auto out = ReluLsqFakeQuantFunction::apply(x, step, range.qn, range.qp, grad_scale);
  return {out[0], out[1]};
}

const char* lsq_cpu_kernel_isa() { return cpu_kernels().isa; }

std::vector<std::string> lsq_cpu_kernel_isas() {
  std::vector<std::string> names;
  for (const auto* k : runnable_kernels()) names.emplace_back(k->isa);
  return names;
}

void lsq_use_cpu_kernel_isa(const std::string& isa) {
  const auto* k = runnable_kernel(isa);
  TORCH_CHECK(k != nullptr, "lsq_use_cpu_kernel_isa: '", isa, "' is not one this CPU runs (", runnable_isas(), ")");
  chosen_kernels().store(k, std::memory_order_relaxed);
}

bool lsq_has_cuda_kernel() {
#ifdef LIMPQ_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace limpq::quant
