#define LIMPQ_KERNEL_NAMESPACE avx512
#include "lsq_kernel_impl.h"

namespace limpq::quant::kernels {

const LsqKernels& avx512_kernels() {
  static const LsqKernels kKernels{&avx512::forward, &avx512::backward, "avx512"};
  return kKernels;
}

}  // namespace limpq::quant::kernels
