extension PoolStateMachine {
    /// Exponential backoff with "equal jitter": the delay doubles per consecutive failure up to the cap, and
    /// half of it is random so that many sidecars restarting together do not retry in lockstep.
    mutating func backoffDelay(failures: Int) -> Duration {
        var base = self.configuration.connectBackoffInitial
        var attempt = 1
        while attempt < failures && base < self.configuration.connectBackoffMax {
            base = base * 2
            attempt += 1
        }
        base = min(base, self.configuration.connectBackoffMax)
        let half = base / 2
        return half + half * self.random.nextFraction()
    }
}

/// A small seeded generator (SplitMix64), so that the jitter is reproducible in tests.
struct SplitMix64: Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    mutating func nextFraction() -> Double {
        Double(self.next() >> 11) / Double(UInt64(1) << 53)
    }
}
