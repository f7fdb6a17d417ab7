#ifndef CLIBFUZZER_H
#define CLIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry for programs with their own `main` (compiler-rt FuzzerInterface.h). SwiftPM links
/// an executable's `main` to `<module>_main`, so libFuzzer's own `main` is never used.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));

#endif
