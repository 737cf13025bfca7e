/// PgBouncer's averages (`avg_*`): the change of each counter between a sample taken at least a stats period ago and
/// now, per second (counts) or per transaction, query or assignment (times). PgBouncer samples on a timer every
/// `stats_period` (60 s); Lifeguard samples when asked, keeping the two latest samples, so that the window is one
/// to two periods long and no timer runs.
public struct AdminStatsWindow: Sendable {
    public struct Averages: Sendable, Equatable {
        public var perDatabase: [String: AdminCounters] = [:]
        public var total = AdminCounters()

        public init() {}
    }

    private struct Sample {
        var at: Int64
        var perDatabase: [String: AdminCounters]
        var total: AdminCounters
    }

    public static let period: Int64 = 60_000_000

    private var older: Sample
    private var newer: Sample

    /// Starts with all counters at 0 at `start` (microseconds since the epoch).
    public init(start: Int64) {
        self.older = Sample(at: start - 1_000_000, perDatabase: [:], total: AdminCounters())
        self.newer = Sample(at: start, perDatabase: [:], total: AdminCounters())
    }

    /// Takes the snapshot's counters as the newest sample once a period has passed since the last one, and returns the
    /// averages since the older sample.
    public mutating func averages(for snapshot: AdminSnapshot) -> Averages {
        let perDatabase = Dictionary(uniqueKeysWithValues: AdminReports.perDatabase(snapshot).map { ($0, $1) })
        let total = snapshot.pools.reduce(AdminCounters()) { $0 + $1.counters }
        if snapshot.now - self.newer.at >= Self.period {
            self.older = self.newer
            self.newer = Sample(at: snapshot.now, perDatabase: perDatabase, total: total)
        }
        let duration = UInt64(max(0, snapshot.now - self.older.at))
        var averages = Averages()
        for (database, counters) in perDatabase {
            averages.perDatabase[database] = AdminCounters.average(
                current: counters,
                older: self.older.perDatabase[database] ?? AdminCounters(),
                microseconds: duration
            )
        }
        averages.total = AdminCounters.average(current: total, older: self.older.total, microseconds: duration)
        return averages
    }
}
