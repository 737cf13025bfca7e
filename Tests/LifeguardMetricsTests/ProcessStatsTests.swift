import Foundation
import Testing

@testable import LifeguardMetrics

@Suite("ProcessStats from /proc/self")
struct ProcessStatsTests {
    @Test("open_fds follows descriptors this process opens and closes")
    func openFDsFollowsDescriptors() throws {
        let before = try #require(ProcessStats.current(startTime: nil).openFDs)
        let extra = (0..<5).map { _ in open("/dev/null", O_RDONLY) }
        defer { for fd in extra { close(fd) } }
        #expect(extra.allSatisfy { $0 >= 0 })
        // Other tests run in parallel and open files too, so allow for their descriptors.
        let during = try #require(ProcessStats.current(startTime: nil).openFDs)
        #expect(during >= before + 5 - 3)
    }

    @Test("CPU seconds grow with work done")
    func cpuSecondsGrow() throws {
        let before = try #require(ProcessStats.current(startTime: nil).cpuSeconds)
        // Spins until the process's own CPU time has grown: wall time would depend on what else the machine runs.
        var x: UInt64 = 1
        var after = before
        for _ in 0..<10_000 where after < before + 0.1 {
            for i in 0..<100_000 { x = x &* 6_364_136_223_846_793_005 &+ UInt64(i) }
            after = try #require(ProcessStats.current(startTime: nil).cpuSeconds)
        }
        #expect(x != 0)
        #expect(after >= before + 0.1)
    }

    @Test("resident memory grows when memory is touched")
    func residentMemoryGrows() throws {
        let before = try #require(ProcessStats.current(startTime: nil).residentMemoryBytes)
        let size = 64 << 20
        let block = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { block.deallocate() }
        memset(block, 1, size)
        let after = try #require(ProcessStats.current(startTime: nil).residentMemoryBytes)
        #expect(after >= before + Double(size / 2))
    }

    @Test("start time is before now and after boot")
    func startTime() throws {
        let start = try #require(ProcessStats.startTime())
        let now = Date().timeIntervalSince1970
        #expect(start <= now)
        let uptime = try String(contentsOfFile: "/proc/uptime", encoding: .utf8).split(separator: " ")[0]
        #expect(start >= now - (Double(uptime) ?? 0) - 1)
    }
}
