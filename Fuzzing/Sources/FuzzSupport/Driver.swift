import CLibFuzzer

/// Runs libFuzzer with the process's arguments and `target` as `LLVMFuzzerTestOneInput`.
///
/// Each fuzz executable calls this from `@_cdecl("<module>_main")`: SwiftPM links an executable's
/// `main` to that symbol (so tests can import executables), which keeps libFuzzer's `main` out.
public func runLibFuzzer(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    target: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, target)
}
