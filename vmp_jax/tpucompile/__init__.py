"""Compiling for TPUs on a machine without one (`vmp compile ... --target v4|v5e|v5p|v6e`):
libtpu installed outside the import path (`toolchain`), a worker subprocess that compiles for
compile-only TPU devices (`worker`), the targets (`targets`) and the reports (`report`)."""
