#include "limpq/util/runtime.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <thread>

namespace limpq::util {

int64_t set_threads(int64_t threads) {
  TORCH_CHECK(threads >= 0, "threads must be >= 0 (0: all cores), got ", threads);
  if (threads == 0) threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(threads));
  return threads;
}

torch::Device resolve_device(const std::string& name) {
  TORCH_CHECK(name == "cpu" || name.rfind("cuda", 0) == 0, "device must be cpu, cuda or cuda:N, got '", name,
              "'");
  torch::Device device(name);
  if (device.is_cuda()) {
    TORCH_CHECK(torch::cuda::is_available(), "device '", name,
                "' requested but CUDA is not available (this LibTorch has no CUDA support or no GPU is "
                "visible); use --device cpu");
    TORCH_CHECK(!device.has_index() || device.index() < static_cast<int64_t>(torch::cuda::device_count()),
                "device '", name, "': only ", torch::cuda::device_count(), " CUDA device(s) visible");
  }
  return device;
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

uint64_t mix_seed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace limpq::util
