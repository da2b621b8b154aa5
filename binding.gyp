{
  "targets": [
    {
      "target_name": "fused_adapters",
      "sources": [
        "native/addon.cc", "native/memory.cc", "native/ops.cc", "native/tensor.cc",
        "native/adapter_ops.cc", "native/nn_ops.cc", "native/decoder_ops.cc", "native/optim_ops.cc", "native/generation_ops.cc", "native/async_op.cc", "native/deferred.cc", "native/fusion_ops.cc", "native/cpu/fusion.cc", "native/cpu/adapter.cc", "native/cpu/nn.cc", "native/cpu/decoder.cc", "native/cpu/attention.cc", "native/cpu/optim.cc", "native/cpu/basic.cc", "native/cpu/gemm.cc", "native/cpu/blas.cc", "native/cpu/generation.cc", "native/cpu/scratch.cc", "native/host_cache.cc",
        "native/cpu/parallel.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "FA_VERSION=\"<!(node -p \"require('./package.json').version\")\""
      ],
      "libraries": ["-ldl"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fopenmp-simd"],
      "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17" }
    }
  ]
}
