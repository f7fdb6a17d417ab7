#ifndef CSPAWN_H
#define CSPAWN_H

#include <spawn.h>

// glibc declares these only under _GNU_SOURCE, which Swift's Glibc module is not built with.

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34): close every descriptor from `from` up in the child.
int cspawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int from);

/// posix_spawn_file_actions_addchdir_np (glibc 2.29): change the child's working directory.
int cspawn_file_actions_addchdir(posix_spawn_file_actions_t *actions, const char *path);

#endif
