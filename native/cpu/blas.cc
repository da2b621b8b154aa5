#include "blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#ifdef FA_HAVE_CBLAS_H
// Checks the hand-written prototype and enum values against the real header where the build has it.
#include <cblas.h>
#include <type_traits>
static_assert(CblasRowMajor == fa::cpu::kCblasRowMajor && CblasNoTrans == fa::cpu::kCblasNoTrans &&
                  CblasTrans == fa::cpu::kCblasTrans,
              "CBLAS enum values differ from blas.h");
static_assert(std::is_same<decltype(&cblas_sgemm),
                           void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, int, int, int, float, const float*,
                                    int, const float*, int, float, float*, int)>::value,
              "cblas_sgemm's signature differs from blas.h (an ILP64 BLAS?)");
static_assert(std::is_same<decltype(&cblas_sgemv), void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, int, int, float, const float*, int,
                                                            const float*, int, float, float*, int)>::value,
              "cblas_sgemv's signature differs from blas.h");
#endif

namespace fa {
namespace cpu {
namespace {

struct Candidate {
  const char* file;
  const char* name;
};

HostBlas load() {
  HostBlas b;
  const char* forced = std::getenv("FUSED_ADAPTERS_BLAS");
  if (forced && std::strcmp(forced, "none") == 0) return b;
  const Candidate known[] = {
      {"libopenblas.so.0", "openblas"}, {"libopenblas.so", "openblas"}, {"libblis.so.4", "blis"},
      {"libmkl_rt.so.2", "mkl"},        {"libmkl_rt.so", "mkl"},        {"libcblas.so.3", "cblas"},
      {"libblas.so.3", "cblas"},
  };
  const Candidate custom[] = {{forced, "cblas"}};
  // OpenBLAS's idle threads spin (sched_yield) for 2^28 cycles after each GEMM before they sleep;
  // between GEMMs this package's own threads run the elementwise passes on the same cores, so the
  // spinning took ~17% of a training step's CPU time (perf). 2^4 cycles: they sleep at once and
  // the next GEMM wakes them (measured: BERT-base step 3.77 -> 2.92 s on 2 cores). Read by
  // OpenBLAS when it loads; a value the user set wins.
  if (!std::getenv("OPENBLAS_THREAD_TIMEOUT") && !std::getenv("GOTO_THREAD_TIMEOUT")) setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
  const Candidate* list = forced && *forced ? custom : known;
  size_t n = forced && *forced ? 1 : sizeof known / sizeof known[0];
  for (size_t i = 0; i < n; i++) {
    // RTLD_LOCAL: the library's symbols stay out of the process's global namespace.
    void* h = dlopen(list[i].file, RTLD_NOW | RTLD_LOCAL);
    if (!h) continue;
    auto f = reinterpret_cast<CblasSgemm>(dlsym(h, "cblas_sgemm"));
    if (!f) {
      dlclose(h);  // e.g. the reference libblas.so.3, which has no CBLAS interface
      continue;
    }
    b.sgemm = f;
    b.sgemv = reinterpret_cast<CblasSgemv>(dlsym(h, "cblas_sgemv"));
    b.file = list[i].file;
    if (auto cfg = reinterpret_cast<const char* (*)()>(dlsym(h, "openblas_get_config"))) {
      b.version = cfg();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH ... <core>"
    } else if (auto mkl = reinterpret_cast<void (*)(char*, int)>(dlsym(h, "mkl_get_version_string"))) {
      char buf[256] = {0};
      mkl(buf, sizeof buf - 1);
      b.version = buf;
    }
    b.name = list[i].name;
    return b;  // kept open for the life of the process
  }
  return b;
}

}  // namespace

const HostBlas& hostBlas() {
  static const HostBlas blas = load();  // thread-safe one-time initialisation
  return blas;
}

}  // namespace cpu
}  // namespace fa
