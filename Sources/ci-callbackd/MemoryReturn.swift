import CEpoll
import CallbackService
import Logging
import ServiceLifecycle

/// Gives memory back to the operating system after bursts of large requests (issue 10 §2).
///
/// glibc keeps what the program frees for reuse. Two habits of its allocator kept a burst's memory
/// resident long after the burst (measured with `scripts/chaos memory`, see README's limits):
/// - the mmap threshold adapts upwards: once a 1 MiB block mmapped for a body is freed, later blocks up to
///   that size come from the arenas instead, where freeing does not unmap them;
/// - small blocks (the trees of bodies with many small elements) freed in the middle of an arena stay
///   resident until `malloc_trim` releases their pages.
///
/// So ``configureAllocator()`` fixes the mmap threshold at start (which also stops its adaptation, so
/// blocks above it are always unmapped when freed), and ``run()`` calls `malloc_trim(0)` once the heap in
/// use has fallen well below its peak since the last trim: once after a burst, never while idle.
struct MemoryReturn: Service {
    /// When to trim.
    struct Configuration: Sendable, Hashable {
        /// How often the heap in use is looked at. Default 1 s.
        var interval: Duration = .seconds(1)
        /// Trim once the heap in use is this far below its peak since the last trim. Default 16 MiB.
        var threshold: Int = 16 << 20
        /// Blocks this large or larger are mmapped, so freeing them returns them at once. Default 128 KiB
        /// (glibc's initial value, which it would otherwise raise as large blocks are freed).
        var mmapThreshold: Int = 128 << 10

        init() {}
    }

    let configuration: Configuration
    private let logger: Logger

    init(configuration: Configuration = Configuration(), logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Sets the allocator's options; call once at start, before the burst of threads.
    func configureAllocator() {
        _ = cepoll_set_mmap_threshold(Int32(clamping: configuration.mmapThreshold))
    }

    func run() async throws {
        let configuration = self.configuration
        await cancelWhenGracefulShutdown {
            var policy = TrimPolicy(threshold: configuration.threshold)
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: configuration.interval)
                } catch {
                    return
                }
                if policy.shouldTrim(inUse: Int(cepoll_heap_in_use())) {
                    _ = cepoll_heap_trim()
                }
            }
        }
    }
}

