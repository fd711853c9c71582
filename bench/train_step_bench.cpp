// Training-step throughput of limpq's networks (Google Benchmark).
//
//   build/bench/limpq_bench --benchmark_filter=TrainStep
//
// Each benchmark runs forward, label-smoothed cross-entropy, backward and an
// SGD step on a fixed batch, and reports images per second. The onnx_* rows
// train the network imported from $LIMPQ_BENCH_ONNX (3 x side x side input;
// skipped when unset), e.g. the transformer study's ViT. The driver
// bench/train_throughput.sh runs it next to the PyTorch-Python baseline
// (with LIMPQ_BENCH_DEVICE=cuda on a GPU: the "_cuda" rows, each step ending
// in a device synchronize, as a loop that reads its loss does).
#include <benchmark/benchmark.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdlib>

#include "limpq/models/model.h"
#include "limpq/models/quantized.h"
#include "limpq/quant/lsq.h"
#include "limpq/quant/policy.h"
#include "limpq/util/runtime.h"

namespace {

namespace F = torch::nn::functional;

// precision: "fp32", or "W4A4" etc. for LSQ QAT of every searchable layer
// (fixed layers at 8 bits) with the fused kernel, "W4A4-ref" with the
// composed-op reference. Channels-last, as limpq trains by default
// (run.channels_last); a "-nchw" suffix trains in the NCHW layout.
void BM_TrainStep(benchmark::State& state, const std::string& arch, int64_t channels,
                  const std::string& precision, const torch::Device& device) {
  if (device.is_cuda() && !torch::cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int64_t batch = state.range(0);
  const int64_t size = state.range(1);
  const char* threads = std::getenv("LIMPQ_THREADS");  // unset: all cores
  state.counters["threads"] = static_cast<double>(limpq::util::set_threads(threads ? std::atoll(threads) : 0));
  // As the CLI trains (LIMPQ_HOST_ALLOCATOR=system measures glibc's defaults).
  limpq::util::retain_freed_host_memory();
  torch::manual_seed(0);
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const bool channels_last = !ends_with(precision, "-nchw");
  const std::string spec = channels_last ? precision : precision.substr(0, precision.size() - 5);
  limpq::models::Model model;
  if (arch == "onnx") {
    const char* onnx = std::getenv("LIMPQ_BENCH_ONNX");
    if (!onnx) {
      state.SkipWithError("LIMPQ_BENCH_ONNX is not set");
      return;
    }
    model = limpq::models::build_model(limpq::models::ModelOptions().onnx(onnx), {channels, size, size}, 10);
  } else {
    model = limpq::models::make_model(arch, channels, 10);
  }
  if (spec != "fp32") {
    const bool reference = ends_with(spec, "-ref");
    const std::string bits = reference ? spec.substr(0, spec.size() - 4) : spec;
    limpq::models::QuantModel qm(model, {channels, size, size},
                                 limpq::models::QuantizeOptions().fused(!reference));
    qm.prepare_policy(qm.uniform_policy(limpq::quant::parse_uniform(bits)));
  }
  model->to(device);
  model->train();
  if (channels_last) limpq::models::to_channels_last(*model);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(5e-4));
  auto x = torch::randn({batch, channels, size, size})
               .to(device)
               .contiguous(limpq::models::memory_format_of(*model));
  auto y = torch::randint(0, 10, {batch}).to(device);
  auto step = [&] {
    auto loss = F::cross_entropy(model->forward(x), y, F::CrossEntropyFuncOptions().label_smoothing(0.1));
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  for (int i = 0; i < 5; ++i) step();  // warm-up: oneDNN primitive creation
  for (auto _ : state) step();
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["images_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
}

// Args: batch, image side: 28 (Fashion-MNIST) and 32 (the CIFAR-sized input
// the brief's step timings use). One input channel. Threads come from
// $LIMPQ_THREADS (default: all cores).
#define LIMPQ_TRAIN_STEP_ON(name, precision, device)                                   \
  BENCHMARK_CAPTURE(BM_TrainStep, name, std::string("resnet20"), 1, std::string(precision), \
                    torch::Device(device))                                             \
      ->ArgNames({"batch", "side"})                                                    \
      ->Args({128, 28})                                                                \
      ->Args({128, 32})                                                                \
      ->Unit(benchmark::kMillisecond)                                              \
      ->UseRealTime()                                                              \
      ->MinTime(5.0)

#define LIMPQ_TRAIN_STEP(name, precision) LIMPQ_TRAIN_STEP_ON(name, precision, torch::kCPU)

LIMPQ_TRAIN_STEP(resnet20_fp32, "fp32");
LIMPQ_TRAIN_STEP(resnet20_W4A4, "W4A4");
LIMPQ_TRAIN_STEP(resnet20_W4A4_reference, "W4A4-ref");
LIMPQ_TRAIN_STEP(resnet20_fp32_nchw, "fp32-nchw");
LIMPQ_TRAIN_STEP(resnet20_W4A4_nchw, "W4A4-nchw");
// The network of $LIMPQ_BENCH_ONNX, on 3 x 28 x 28 (the ViT of
// bench/transformer_study.py --stages step).
#define LIMPQ_TRAIN_STEP_ONNX(name, precision)                                                           \
  BENCHMARK_CAPTURE(BM_TrainStep, name, std::string("onnx"), 3, std::string(precision), torch::kCPU) \
      ->ArgNames({"batch", "side"})                                                                  \
      ->Args({128, 28})                                                                              \
      ->Unit(benchmark::kMillisecond)                                                                \
      ->UseRealTime()                                                                                \
      ->MinTime(5.0)
LIMPQ_TRAIN_STEP_ONNX(onnx_fp32, "fp32");
LIMPQ_TRAIN_STEP_ONNX(onnx_W4A4, "W4A4");
LIMPQ_TRAIN_STEP_ONNX(onnx_fp32_nchw, "fp32-nchw");
LIMPQ_TRAIN_STEP_ONNX(onnx_W4A4_nchw, "W4A4-nchw");
// On the GPU (skipped without one): the same rows, the fused CUDA kernel.
LIMPQ_TRAIN_STEP_ON(resnet20_fp32_cuda, "fp32", torch::kCUDA);
LIMPQ_TRAIN_STEP_ON(resnet20_W4A4_cuda, "W4A4", torch::kCUDA);
LIMPQ_TRAIN_STEP_ON(resnet20_W4A4_reference_cuda, "W4A4-ref", torch::kCUDA);
LIMPQ_TRAIN_STEP_ON(resnet20_fp32_nchw_cuda, "fp32-nchw", torch::kCUDA);
LIMPQ_TRAIN_STEP_ON(resnet20_W4A4_nchw_cuda, "W4A4-nchw", torch::kCUDA);

// One activation tensor of resnet20's first stage at 32x32 (128x16x32x32):
// forward + backward of the fused LSQ kernel, of the composed-op reference,
// of ReLU for scale, and of a ReLU feeding the quantizer: ReLU then the
// kernel, against the ReLU folded into the kernel (lsq_fake_quant_of_relu).
void BM_ElementWise(benchmark::State& state, const std::string& op) {
  const char* threads = std::getenv("LIMPQ_THREADS");
  limpq::util::set_threads(threads ? std::atoll(threads) : 0);
  auto x = torch::randn({128, 16, 32, 32}).requires_grad_();
  auto step = torch::full({}, 0.1f).requires_grad_();
  auto g = torch::randn({128, 16, 32, 32});
  const auto range = limpq::quant::QuantRange::of(4, false);
  for (auto _ : state) {
    torch::Tensor y;
    if (op == "lsq") y = limpq::quant::lsq_fake_quant(x, step, range, 0.01);
    else if (op == "lsq_ref") y = limpq::quant::lsq_fake_quant_reference(x, step, range, 0.01);
    else if (op == "relu_then_lsq") y = limpq::quant::lsq_fake_quant(torch::relu(x), step, range, 0.01);
    else if (op == "lsq_of_relu") y = limpq::quant::lsq_fake_quant_of_relu(x, step, range, 0.01);
    else if (op == "relu_and_lsq" || op == "relu_then_lsq_both") {
      // A block's output: the ReLU feeds the shortcut, its quantized copy
      // the next conv, and gradients come back along both.
      torch::Tensor relu, quantized;
      if (op == "relu_and_lsq") {
        auto both = limpq::quant::relu_and_lsq_fake_quant(x, step, range, 0.01);
        relu = both.relu;
        quantized = both.quantized;
      } else {
        relu = torch::relu(x);
        quantized = limpq::quant::lsq_fake_quant(relu, step, range, 0.01);
      }
      torch::autograd::backward({relu, quantized}, {g, g});
      continue;
    } else y = torch::relu(x);
    y.backward(g);
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * 4);
}
#define LIMPQ_ELEMENT_WISE(op) \
  BENCHMARK_CAPTURE(BM_ElementWise, op, std::string(#op))->Unit(benchmark::kMillisecond)->UseRealTime()
LIMPQ_ELEMENT_WISE(lsq);
LIMPQ_ELEMENT_WISE(lsq_ref);
LIMPQ_ELEMENT_WISE(relu);
LIMPQ_ELEMENT_WISE(relu_then_lsq);
LIMPQ_ELEMENT_WISE(lsq_of_relu);
LIMPQ_ELEMENT_WISE(relu_then_lsq_both);
LIMPQ_ELEMENT_WISE(relu_and_lsq);

}  // namespace

BENCHMARK_MAIN();
