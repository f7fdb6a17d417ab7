// libFuzzer itself comes from the toolchain (-sanitize=fuzzer); this target only declares its driver.
