{
  "targets": [
    {
      "target_name": "bakker_native",
      "sources": ["src/native/bakker_native.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-l:libzstd.so.1"]
    }
  ]
}
