// Data-parallel training over processes through LibTorch's c10d: Gloo on
// CPU, NCCL for CUDA tensors when LibTorch has it.
//
// Rendezvous follows PyTorch's launchers: RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun), or Slurm's
// SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE
// (MASTER_ADDR from the environment or SLURM_LAUNCH_NODE_IPADDR). Rank 0
// hosts a TCPStore on MASTER_PORT, which listens on every interface: use it
// on a trusted network only. `limpq launch` (workers on one machine) sets
// LIMPQ_RENDEZVOUS_FILE instead: the workers meet through a FileStore in a
// private directory and Gloo binds to loopback, so no port is opened on any
// network interface. Without WORLD_SIZE > 1 every call here is a no-op, so
// the single-process path is unchanged.
//
//   dist::init_from_environment(std::chrono::seconds(300));
//   dist::broadcast_module(*model);                 // identical start
//   loss.backward(); dist::allreduce_gradients(params);
//   if (dist::is_main()) save_checkpoint(...);
//
// Every collective has a timeout; a peer that dies or hangs makes the
// others fail with an error that names the ranks that did not arrive.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace limpq::dist {

struct Env {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  // LIMPQ_RENDEZVOUS_FILE: a FileStore path (local workers); empty: TCPStore.
  std::string rendezvous_file;
  // Reads the variables above; WORLD_SIZE (or SLURM_NTASKS) absent means 1.
  // Inconsistent values are an error naming the variable.
  static Env from_environment();
};

// Joins the job described by the environment (once; later calls do nothing).
// `timeout` bounds rendezvous and every collective.
void init_from_environment(std::chrono::milliseconds timeout);
// Leaves the job (tests; normally at exit).
void shutdown();

bool is_distributed();
int64_t rank();
int64_t world_size();
int64_t local_world_size();
inline bool is_main() { return rank() == 0; }

// In-place sum over workers of tensors that all live on one device.
void allreduce_sum(std::vector<torch::Tensor>& tensors);
// In-place mean over workers.
void allreduce_mean(torch::Tensor& tensor);
// Copies rank 0's parameters and buffers to every worker.
void broadcast_module(torch::nn::Module& module);
// Averages the gradients of `params` over workers, flattened into buckets of
// about `bucket_bytes`; parameters without a gradient on every worker are
// treated as zero (undefined gradients become zeros). Returns the bytes
// all-reduced.
int64_t allreduce_gradients(const std::vector<torch::Tensor>& params, int64_t bucket_bytes = 25 << 20);
// Averages the batch-norm running statistics (running_mean, running_var) of
// `module` over workers.
void average_batch_norm_statistics(torch::nn::Module& module);
// Records that this worker reached `step` (named in timeout errors).
void heartbeat(int64_t step);
// Waits for every worker.
void barrier();

// SyncBatchNorm: when on, training-mode batch norm uses the mean and
// variance of the global batch (see sync_batch_norm). In a single process
// it is limpq's own batch norm over the local batch, so that a one-process
// run with it is the exact reference for a multi-process one.
void set_sync_batch_norm(bool on);
bool sync_batch_norm_enabled();

// Batch norm over the global batch: statistics all-reduced in the forward
// pass, the matching sums in the backward pass. Updates the running
// statistics like torch::batch_norm in training mode.
torch::Tensor sync_batch_norm(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor& running_mean, torch::Tensor& running_var, double momentum, double eps);

}  // namespace limpq::dist
