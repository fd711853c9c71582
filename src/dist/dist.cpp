#include "limpq/dist/dist.h"

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include "limpq/util/text.h"

#if defined(USE_C10D_NCCL) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define LIMPQ_HAVE_NCCL 1
#endif

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <thread>

namespace limpq::dist {
namespace {

// The process-group backends derive from c10d::ProcessGroup in LibTorch 1.x
// and from c10d::Backend in 2.x; both offer the collectives used here.
#if TORCH_VERSION_MAJOR >= 2
using Group = c10d::Backend;
#else
using Group = c10d::ProcessGroup;
#endif

std::optional<std::string> getenv_str(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int64_t env_int(const char* name, int64_t fallback) {
  const auto v = getenv_str(name);
  if (!v) return fallback;
  const auto value = util::parse_int(*v);
  TORCH_CHECK(value, "distributed: environment variable ", name, "='", *v, "' is not an integer");
  return *value;
}

struct State {
  Env env;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> gloo;
#ifdef LIMPQ_HAVE_NCCL
  c10::intrusive_ptr<Group> nccl;
#endif
  int64_t step = -1;  // last heartbeat
  bool sync_bn = false;
  bool initialised = false;
};

State& state() {
  static State s;
  return s;
}

Group& group_for(const torch::Tensor& t) {
  State& s = state();
#ifdef LIMPQ_HAVE_NCCL
  if (t.is_cuda()) {
    if (!s.nccl) {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = s.timeout;
      s.nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", s.store), s.env.rank, s.env.world_size, options);
    }
    return *s.nccl;
  }
#endif
  return *s.gloo;
}

// A collective failed: find out which workers are missing and say so.
[[noreturn]] void fail(const std::string& what, const std::exception& e) {
  State& s = state();
  const std::string cause = util::error_message(e);
  // Every worker that notices the failure checks in; the ones that do not
  // within a few seconds died or hang.
  std::string missing;
  try {
    s.store->setTimeout(std::chrono::seconds(2));
    s.store->set("limpq/failed/" + std::to_string(s.env.rank), std::vector<uint8_t>{1});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    std::vector<int64_t> absent;
    do {
      absent.clear();
      for (int64_t r = 0; r < s.env.world_size; ++r) {
        if (r != s.env.rank && !s.store->check({"limpq/failed/" + std::to_string(r)})) absent.push_back(r);
      }
      if (absent.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::steady_clock::now() < deadline);
    for (int64_t r : absent) {
      const std::string key = "limpq/heartbeat/" + std::to_string(r);
      std::string seen = "never";
      if (s.store->check({key})) {
        const auto bytes = s.store->get(key);
        seen = "step " + std::string(bytes.begin(), bytes.end());
      }
      missing += (missing.empty() ? "" : ", ") + ("rank " + std::to_string(r)) + " (last seen at " + seen + ")";
    }
    missing = missing.empty() ? "none (every worker reports the failure)" : missing + ", which died or hangs";
  } catch (const std::exception&) {
    missing = "rank 0, which hosts the rendezvous store, is unreachable (it died or hangs)";
  }
  TORCH_CHECK(false, "distributed: rank ", s.env.rank, ": ", what, " failed at step ", s.step + 1, " (timeout ",
              s.timeout.count() / 1000.0, " s): ", cause, ". Missing: ", missing,
              ". Every worker stops; resume the job from its last checkpoint with --resume");
}

void wait(const char* what, const c10::intrusive_ptr<c10d::Work>& work) {
  try {
    work->wait(state().timeout);
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

}  // namespace

Env Env::from_environment() {
  Env env;
  const bool slurm = !getenv_str("WORLD_SIZE") && getenv_str("SLURM_NTASKS").has_value();
  env.world_size = slurm ? env_int("SLURM_NTASKS", 1) : env_int("WORLD_SIZE", 1);
  env.rank = slurm ? env_int("SLURM_PROCID", 0) : env_int("RANK", 0);
  env.local_rank = slurm ? env_int("SLURM_LOCALID", 0) : env_int("LOCAL_RANK", 0);
  env.local_world_size = slurm ? env_int("SLURM_NTASKS_PER_NODE", env.world_size)
                               : env_int("LOCAL_WORLD_SIZE", env.world_size);
  TORCH_CHECK(env.world_size >= 1, "distributed: WORLD_SIZE must be >= 1, got ", env.world_size);
  TORCH_CHECK(env.rank >= 0 && env.rank < env.world_size, "distributed: RANK ", env.rank,
              " is not in [0, WORLD_SIZE=", env.world_size, ")");
  TORCH_CHECK(env.local_world_size >= 1, "distributed: LOCAL_WORLD_SIZE must be >= 1");
  if (auto file = getenv_str("LIMPQ_RENDEZVOUS_FILE")) {
    env.rendezvous_file = *file;
  } else if (auto addr = getenv_str("MASTER_ADDR")) {
    env.master_addr = *addr;
  } else if (auto launch = getenv_str("SLURM_LAUNCH_NODE_IPADDR"); slurm && launch) {
    env.master_addr = *launch;
  } else {
    TORCH_CHECK(env.world_size == 1, "distributed: WORLD_SIZE=", env.world_size,
                " but MASTER_ADDR is not set (the address of rank 0)");
  }
  env.master_port = env_int("MASTER_PORT", 29500);
  TORCH_CHECK(env.master_port > 0 && env.master_port < 65536, "distributed: MASTER_PORT ", env.master_port,
              " is not a TCP port");
  return env;
}

namespace {

c10::intrusive_ptr<c10d::Store> tcp_store(const Env& env, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = env.rank == 0;
  options.numWorkers = static_cast<size_t>(env.world_size);
  options.waitWorkers = true;
  options.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
}

c10::intrusive_ptr<c10d::Store> file_store(const Env& env, std::chrono::milliseconds timeout) {
  auto store = c10::make_intrusive<c10d::FileStore>(env.rendezvous_file, static_cast<int>(env.world_size));
  store->setTimeout(timeout);
  return store;
}

std::string rendezvous_name(const Env& env) {
  return env.rendezvous_file.empty() ? env.master_addr + ":" + std::to_string(env.master_port)
                                     : "the rendezvous file " + env.rendezvous_file;
}

}  // namespace

void init_from_environment(std::chrono::milliseconds timeout) {
  State& s = state();
  if (s.initialised) return;
  s.env = Env::from_environment();
  s.timeout = timeout;
  s.initialised = true;
  if (s.env.world_size == 1) return;
  try {
    s.store = s.env.rendezvous_file.empty() ? tcp_store(s.env, timeout) : file_store(s.env, timeout);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "distributed: rank ", s.env.rank, " could not join the job at ", rendezvous_name(s.env),
                " within ", timeout.count() / 1000.0, " s: ", util::error_message(e));
  }
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (auto iface = getenv_str("GLOO_SOCKET_IFNAME")) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*iface));
  } else if (!s.env.rendezvous_file.empty() || s.env.master_addr == "127.0.0.1" || s.env.master_addr == "localhost") {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  options->threads = 2;
  s.gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", s.store),
                                                       static_cast<int>(s.env.rank),
                                                       static_cast<int>(s.env.world_size), options);
  heartbeat(-1);
}

void shutdown() {
  State& s = state();
  s.gloo.reset();
#ifdef LIMPQ_HAVE_NCCL
  s.nccl.reset();
#endif
  s.store.reset();
  s = State();
}

bool is_distributed() { return state().initialised && state().env.world_size > 1; }
int64_t rank() { return is_distributed() ? state().env.rank : 0; }
int64_t world_size() { return is_distributed() ? state().env.world_size : 1; }
int64_t local_world_size() {
  return state().initialised ? state().env.local_world_size : Env::from_environment().local_world_size;
}

void heartbeat(int64_t step) {
  State& s = state();
  s.step = step;
  if (!is_distributed()) return;
  const std::string value = std::to_string(step);
  s.store->set("limpq/heartbeat/" + std::to_string(s.env.rank), std::vector<uint8_t>(value.begin(), value.end()));
}

void allreduce_sum(std::vector<torch::Tensor>& tensors) {
  if (!is_distributed() || tensors.empty()) return;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one{t};
    try {
      works.push_back(group_for(t).allreduce(one));
    } catch (const std::exception& e) {
      fail("all-reduce", e);
    }
  }
  for (const auto& w : works) wait("all-reduce", w);
}

void allreduce_mean(torch::Tensor& tensor) {
  if (!is_distributed()) return;
  std::vector<torch::Tensor> one{tensor};
  allreduce_sum(one);
  tensor.div_(static_cast<double>(world_size()));
}

void broadcast_module(torch::nn::Module& module) {
  if (!is_distributed()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors = module.parameters();
  for (const auto& b : module.buffers()) tensors.push_back(b);
  for (auto& t : tensors) {
    // Gloo has no bool type: bool buffers travel as bytes.
    std::vector<torch::Tensor> one{t.scalar_type() == torch::kBool ? t.to(torch::kUInt8) : t.detach()};
    c10d::BroadcastOptions options;
    options.rootRank = 0;
    try {
      wait("broadcast of the initial model", group_for(one[0]).broadcast(one, options));
    } catch (const c10::Error&) {
      throw;
    } catch (const std::exception& e) {
      fail("broadcast of the initial model", e);
    }
    if (t.scalar_type() == torch::kBool) t.detach().copy_(one[0].to(torch::kBool));
  }
}

int64_t allreduce_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes) {
  if (!is_distributed()) return 0;
  torch::NoGradGuard no_grad;
  // Buckets of gradients with the same device and dtype, in parameter order.
  struct Bucket {
    std::vector<torch::Tensor> grads;
    int64_t bytes = 0;
  };
  std::vector<Bucket> buckets;
  std::map<std::pair<std::string, int>, size_t> open;  // (device, dtype) -> bucket index
  for (const auto& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;  // every worker runs the same graph: undefined everywhere
    const auto key = std::make_pair(g.device().str(), static_cast<int>(g.scalar_type()));
    auto it = open.find(key);
    if (it == open.end() || buckets[it->second].bytes >= bucket_bytes) {
      buckets.emplace_back();
      it = open.insert_or_assign(key, buckets.size() - 1).first;
    }
    Bucket& b = buckets[it->second];
    b.grads.push_back(g);
    b.bytes += g.numel() * g.element_size();
  }
  std::vector<torch::Tensor> flat;
  int64_t total = 0;
  for (const auto& b : buckets) {
    std::vector<torch::Tensor> views;
    for (const auto& g : b.grads) views.push_back(g.reshape({-1}));
    flat.push_back(torch::cat(views));
    total += b.bytes;
  }
  allreduce_sum(flat);
  const double scale = 1.0 / static_cast<double>(world_size());
  for (size_t i = 0; i < buckets.size(); ++i) {
    flat[i].mul_(scale);
    int64_t offset = 0;
    for (auto& g : buckets[i].grads) {
      g.copy_(flat[i].narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
  }
  return total;
}

void average_batch_norm_statistics(torch::nn::Module& module) {
  if (!is_distributed()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> stats;
  for (const auto& b : module.named_buffers()) {
    const std::string& name = b.key();
    const auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with("running_mean") || ends_with("running_var")) stats.push_back(b.value());
  }
  if (stats.empty()) return;
  std::vector<torch::Tensor> views;
  for (const auto& t : stats) views.push_back(t.reshape({-1}));
  std::vector<torch::Tensor> flat{torch::cat(views)};
  allreduce_sum(flat);
  flat[0].div_(static_cast<double>(world_size()));
  int64_t offset = 0;
  for (auto& t : stats) {
    t.copy_(flat[0].narrow(0, offset, t.numel()).view_as(t));
    offset += t.numel();
  }
}

void barrier() {
  if (!is_distributed()) return;
  torch::Tensor token = torch::zeros({1});
  std::vector<torch::Tensor> one{token};
  allreduce_sum(one);
}

void set_sync_batch_norm(bool on) { state().sync_bn = on; }
bool sync_batch_norm_enabled() { return state().sync_bn; }

namespace {

// Batch norm with statistics of the global batch (see the header). Local
// sums are all-reduced in double; the backward pass all-reduces
// sum(dy) and sum(dy * xhat) so that dx matches the single-process batch.
class SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor running_mean,
                               torch::Tensor running_var, double momentum, double eps) {
    const int64_t channels = x.size(1);
    const std::vector<int64_t> dims = {0, 2, 3};
    const torch::Tensor xd = x.to(torch::kFloat64);
    torch::Tensor sums = torch::cat({xd.sum(dims), (xd * xd).sum(dims),
                                     torch::full({1}, static_cast<double>(x.numel() / channels), xd.options())});
    std::vector<torch::Tensor> one{sums};
    allreduce_sum(one);
    const double count = sums[2 * channels].item<double>();
    const torch::Tensor mean = sums.narrow(0, 0, channels) / count;
    const torch::Tensor var = (sums.narrow(0, channels, channels) / count - mean * mean).clamp_min(0.0);
    const torch::Tensor invstd = torch::rsqrt(var + eps);
    {
      torch::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1 - momentum).add_((var * (count / std::max(count - 1, 1.0))).to(running_var.scalar_type()),
                                          momentum);
    }
    const auto shape = std::vector<int64_t>{1, channels, 1, 1};
    const torch::Tensor xhat = ((xd - mean.view(shape)) * invstd.view(shape)).to(x.scalar_type());
    ctx->save_for_backward({xhat, weight, invstd.to(x.scalar_type())});
    ctx->saved_data["count"] = count;
    return xhat * weight.view(shape) + bias.view(shape);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& xhat = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& invstd = saved[2];
    const double count = ctx->saved_data["count"].toDouble();
    const torch::Tensor dy = grads[0].contiguous();
    const int64_t channels = dy.size(1);
    const std::vector<int64_t> dims = {0, 2, 3};
    const torch::Tensor sum_dy = dy.sum(dims);
    const torch::Tensor sum_dy_xhat = (dy * xhat).sum(dims);
    std::vector<torch::Tensor> one{torch::cat({sum_dy, sum_dy_xhat}).to(torch::kFloat64)};
    allreduce_sum(one);
    const auto shape = std::vector<int64_t>{1, channels, 1, 1};
    const torch::Tensor mean_dy = (one[0].narrow(0, 0, channels) / count).to(dy.scalar_type()).view(shape);
    const torch::Tensor mean_dy_xhat =
        (one[0].narrow(0, channels, channels) / count).to(dy.scalar_type()).view(shape);
    const torch::Tensor dx = (weight * invstd).view(shape) * (dy - mean_dy - xhat * mean_dy_xhat);
    // Local parameter gradients: the gradient all-reduce averages them.
    return {dx, sum_dy_xhat, sum_dy, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor sync_batch_norm(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor& running_mean, torch::Tensor& running_var, double momentum, double eps) {
  TORCH_CHECK(input.dim() == 4, "sync_batch_norm: expected N x C x H x W input, got ", input.sizes());
  return SyncBatchNormFunction::apply(input, weight, bias, running_mean, running_var, momentum, eps);
}

}  // namespace limpq::dist
