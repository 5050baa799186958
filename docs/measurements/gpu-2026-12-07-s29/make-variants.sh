#!/bin/bash
# SPDX-License-Identifier: MIT
# Builds, here, the Vulkan plugin once per decode_tc variant for
# variants.sh to compare on an NVIDIA machine in one run: the tree's own
# (.tc-variants/main) and one per patch given (default: the next-*.patch
# files beside this script), each applied to a copy of the tree in
# /tmp/tc-variant-NAME and its plugin alone built there
# (ninja plugins/vulkan/turbokv-vulkan.so). Run from the repository root;
# add /.tc-variants/ to .git/info/exclude and carry .tc-variants.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$PWD
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=("$here"/next-*.patch)
mkdir -p .tc-variants/main
cp build/plugins/vulkan/turbokv-vulkan.so .tc-variants/main/
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch)
  src=/tmp/tc-variant-$name
  rm -rf "$src"
  git worktree prune
  git worktree add -q --detach "$src" HEAD
  git -C "$src" apply "$p"
  meson setup "$src/build" "$src" > /dev/null
  ninja -C "$src/build" plugins/vulkan/turbokv-vulkan.so > /dev/null
  mkdir -p ".tc-variants/$name"
  cp "$src/build/plugins/vulkan/turbokv-vulkan.so" ".tc-variants/$name/"
  git worktree remove --force "$src"
  echo "built .tc-variants/$name"
done
ls -la .tc-variants/*/turbokv-vulkan.so
