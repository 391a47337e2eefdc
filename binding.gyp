{
  "targets": [
    {
      "target_name": "loraserve_native",
      "sources": [
        "kernels/native/addon.cc",
        "kernels/native/runtime.cc",
        "kernels/native/session.cc",
        "kernels/native/session-create.cc",
        "kernels/native/lora-op.cc",
        "kernels/native/lora-plan.cc",
        "kernels/native/lora-isa.cc",
        "kernels/native/lora-kernel-portable.cc",
        "kernels/native/lora-kernel-avx2.cc",
        "kernels/native/lora-kernel-avx512.cc"
      ],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-ldl"]
    }
  ]
}
