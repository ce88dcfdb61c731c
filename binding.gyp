{
  "targets": [
    {
      "target_name": "introvisor",
      "sources": ["native/src/addon.cc", "native/src/physical_memory.cc", "native/src/address_space.cc", "native/src/file_extents.cc", "native/src/write_trap.cc", "native/src/peer_cred.cc",
                  "native/src/core/ram_file.cc", "native/src/core/page_walker.cc", "native/src/core/list_walk.cc", "native/src/core/gathers.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
