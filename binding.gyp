{
  "targets": [
    {
      "target_name": "introvisor",
      "sources": ["native/src/addon.cc", "native/src/physical_memory.cc", "native/src/address_space.cc", "native/src/file_extents.cc", "native/src/write_trap.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
