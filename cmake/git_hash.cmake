# Writes OUT (a header defining PATCHLLM_GIT_HASH) from the git checkout at SRC_DIR: the short hash of HEAD, with
# "-dirty" where tracked files differ from it, or "unknown" outside a checkout. Run at every build (the
# patchllm_git_hash target), so provenance names the tree a binary was built from, not the one cmake last configured;
# OUT is rewritten only when its text changes, so an unchanged hash rebuilds nothing.
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC_DIR}
                OUTPUT_VARIABLE hash OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT hash)
  set(hash "unknown")
else()
  # (no optional locks: a build must not take git's index lock from under the user's own git commands)
  execute_process(COMMAND git --no-optional-locks status --porcelain --untracked-files=no
                  WORKING_DIRECTORY ${SRC_DIR} OUTPUT_VARIABLE changes ERROR_QUIET RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    set(hash "${hash}-unknown")
  elseif(changes)
    set(hash "${hash}-dirty")
  endif()
endif()
set(text "#pragma once\n#define PATCHLLM_GIT_HASH \"${hash}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT}.tmp "${text}")
  file(RENAME ${OUT}.tmp ${OUT})
endif()
