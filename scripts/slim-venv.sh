#!/bin/sh
# Removes from a venv the parts of its wheels that modelserve never loads
# (~110 MB of the runtime set): test suites, type stubs and Cython sources, pyarrow's C++
# headers and its Flight RPC and S3 filesystem libraries (pyarrow imports
# both only on demand), the two extra copies of libarrow_python (wheels hold
# no symlinks: only the .so.<major> name is loaded, by its soname), and
# onnxruntime's C API library (capi/libonnxruntime.so.*: for programs that
# link onnxruntime; the Python binding has the runtime built in and loads
# nothing else); and the debug symbols of uvloop's extension, which its wheel
# ships unstripped (13.6 MB; 1.6 MB without), when binutils' strip is there.
# Used by the Dockerfile's build stage and by
# scripts/measure-install.sh.   usage: slim-venv.sh VENV
set -eu
site=$(find "$1/lib" -maxdepth 2 -type d -name site-packages | head -n 1)
find "$site" -depth -type d -name tests -exec rm -rf {} +
find "$site" \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' \) -delete
rm -rf "$site"/pyarrow/include "$site"/pyarrow/src "$site"/pyarrow/*flight* "$site"/pyarrow/*s3* \
       "$site"/pyarrow/_pyarrow_cpp_tests*
# libarrow_python.so and .so.<major>.<minor>.<patch> are link-time names; the
# extension modules need .so.<major> (readelf -d: NEEDED libarrow_python.so.2600)
for lib in "$site"/pyarrow/libarrow_python*.so; do
  [ -e "$lib" ] || continue
  rm -f "$lib" "$lib".*.*.*
done
rm -f "$site"/onnxruntime/capi/libonnxruntime.so.*
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$site"/uvloop/*.so
else
  echo "slim-venv: no strip (binutils): uvloop keeps its debug symbols (~12 MB)" >&2
fi
