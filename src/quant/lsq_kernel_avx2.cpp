#define LIMPQ_KERNEL_NAMESPACE avx2
#include "lsq_kernel_impl.h"

namespace limpq::quant::kernels {

const LsqKernels& avx2_kernels() {
  static const LsqKernels kKernels{&avx2::forward, &avx2::backward, "avx2"};
  return kKernels;
}

}  // namespace limpq::quant::kernels
