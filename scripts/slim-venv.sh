#!/bin/sh
# Removes from a venv the parts of its wheels that modelserve never loads
# (~90 MB of the runtime set): test suites, Cython sources, pyarrow's C++
# headers and its Flight RPC and S3 filesystem libraries (pyarrow imports
# both only on demand). Used by the Dockerfile's build stage and by
# scripts/measure-install.sh.   usage: slim-venv.sh VENV
set -eu
site=$(find "$1/lib" -maxdepth 2 -type d -name site-packages | head -n 1)
find "$site" -depth -type d -name tests -exec rm -rf {} +
find "$site" \( -name '*.pyx' -o -name '*.pxd' \) -delete
rm -rf "$site"/pyarrow/include "$site"/pyarrow/src "$site"/pyarrow/*flight* "$site"/pyarrow/*s3* \
       "$site"/pyarrow/_pyarrow_cpp_tests*
