#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The `process_*` values, read from /proc/self at scrape time (Linux; elsewhere the fields /proc would give are
/// `nil` and those series are left out).
struct ProcessStats: Sendable {
    var residentMemoryBytes: Double?
    var virtualMemoryBytes: Double?
    var cpuSeconds: Double?
    var openFDs: Double?
    var maxFDs: Double?
    var startTimeSeconds: Double?

    /// Reads the current values. `startTime` is read once by the caller: it never changes.
    static func current(startTime: Double?) -> ProcessStats {
        var stats = ProcessStats()
        stats.startTimeSeconds = startTime
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let fields = Self.statFields(), fields.count > 21, ticks > 0 {
            // Fields after the command name, counted from 3 as in proc(5): utime 14, stime 15, vsize 23, rss 24.
            if let utime = Self.number(fields[14 - 3]), let stime = Self.number(fields[15 - 3]) {
                stats.cpuSeconds = (utime + stime) / ticks
            }
            stats.virtualMemoryBytes = Self.number(fields[23 - 3])
            if let rss = Self.number(fields[24 - 3]) {
                stats.residentMemoryBytes = rss * pageSize
            }
        }
        stats.openFDs = Self.countOpenFDs()
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            stats.maxFDs = Double(limit.rlim_cur)
        }
        return stats
    }

    /// Process start time in seconds since the epoch: boot time plus the start tick count of /proc/self/stat.
    static func startTime() -> Double? {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        guard ticks > 0, let fields = Self.statFields(), fields.count > 19, let started = Self.number(fields[22 - 3]),
            let procStat = Self.readFile("/proc/stat")
        else { return nil }
        for line in String(decoding: procStat, as: UTF8.self).split(separator: "\n") where line.hasPrefix("btime ") {
            guard let bootTime = Double(line.dropFirst("btime ".count)) else { return nil }
            return bootTime + started / ticks
        }
        return nil
    }

    /// /proc/self/stat split on spaces after the command name, which is in parentheses and may itself hold spaces.
    /// Split as bytes: splitting it as a String, Character by Character, cost more than the rest of a scrape's
    /// process families together.
    private static func statFields() -> [ArraySlice<UInt8>]? {
        guard let stat = Self.readFile("/proc/self/stat"), let close = stat.lastIndex(of: UInt8(ascii: ")")) else {
            return nil
        }
        return stat[(close + 1)...].split(separator: UInt8(ascii: " "))
    }

    /// A decimal field; short enough to fit a small String, so parsing it allocates nothing.
    private static func number(_ field: ArraySlice<UInt8>) -> Double? {
        Double(String(decoding: field, as: UTF8.self))
    }

    private static func countOpenFDs() -> Double? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
                name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
            }
            if !isDot { count += 1 }
        }
        // The directory stream's own descriptor is not one of the process's.
        return Double(max(count - 1, 0))
    }

    /// Reads a whole small file; /proc files report size 0, so read until EOF.
    private static func readFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return bytes
    }
}
