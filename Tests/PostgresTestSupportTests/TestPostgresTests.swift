import Foundation
import PostgresTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct TestPostgresTests {
    /// A child of a thread that blocks SIGALRM (as test runners' threads may) still starts with nothing blocked, so
    /// timers like `pgbench -T`'s fire.
    @Test func childrenStartWithNoSignalBlocked() async {
        let result = await withCheckedContinuation { continuation in
            // A thread of its own, so the blocked signal does not stay on one of the runner's threads.
            Thread.detachNewThread {
                var alarm = sigset_t()
                sigemptyset(&alarm)
                sigaddset(&alarm, SIGALRM)
                pthread_sigmask(SIG_BLOCK, &alarm, nil)
                continuation.resume(returning: TestPostgres.run("/bin/grep", ["^SigBlk:", "/proc/self/status"]))
            }
        }
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output == "SigBlk:\t0000000000000000")
    }

    @Test func runReportsExitStatusAndOutput() {
        let result = TestPostgres.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(result.status == 3)
        #expect(result.output == "out\nerr")
        #expect(TestPostgres.run("/nonexistent", []).status == -1)
    }
}
