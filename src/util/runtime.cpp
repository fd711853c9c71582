#include "limpq/util/runtime.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace limpq::util {

int64_t set_threads(int64_t threads) {
  TORCH_CHECK(threads >= 0, "threads must be >= 0 (0: all cores), got ", threads);
  if (threads == 0) threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(threads));
  return threads;
}

bool retain_freed_host_memory() {
#if defined(__GLIBC__)
  const char* choice = std::getenv("LIMPQ_HOST_ALLOCATOR");
  if (choice != nullptr && *choice != '\0') {
    TORCH_CHECK(std::strcmp(choice, "system") == 0 || std::strcmp(choice, "retain") == 0,
                "LIMPQ_HOST_ALLOCATOR must be 'retain' (the default) or 'system', got '", choice, "'");
    if (std::strcmp(choice, "system") == 0) return false;
  }
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return false;
  for (const char* name : {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"}) {
    if (std::getenv(name) != nullptr) return false;
  }
  // A fixed threshold (glibc's largest) also stops the dynamic one from
  // sending the next buffer of an unseen size to mmap.
  constexpr int kMmapThreshold = 32 << 20;
  constexpr int kTrimThreshold = 1 << 30;
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
#else
  return false;
#endif
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
