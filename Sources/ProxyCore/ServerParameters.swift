/// A server connection's run-time parameters, and which client parameters were last found to match them.
public struct ServerParameters: Sendable {
    public private(set) var values: [String: String]
    /// Changes with every value set, so that a recorded match is known to still hold.
    public private(set) var version: UInt64 = 0
    private var matched: (wanted: SessionParameters, version: UInt64)?

    public init(_ values: [String: String]) {
        self.values = values
    }

    public subscript(name: String) -> String? {
        get { self.values[name] }
        set {
            self.values[name] = newValue
            self.version &+= 1
        }
    }

    /// The `SET`s that bring this connection to `wanted`. Clients of one pool usually share the storage of their
    /// wanted parameters (the proxy's pool shares them), so a connection that already matched them is recognised without
    /// comparing values again: one check per transaction instead of a lookup per parameter.
    public mutating func changes(toMatch wanted: SessionParameters) -> [(name: String, value: String)] {
        if let matched = self.matched, matched.version == self.version, matched.wanted.isIdentical(to: wanted) {
            return []
        }
        let changes = wanted.differences(from: self.values)
        self.matched = changes.isEmpty ? (wanted, self.version) : nil
        return changes
    }
}

extension ServerParameters {
    /// Records `SET`s that succeeded: the server's values of parameters it does not report become the ones set.
    /// Returns the server's current values of the reported ones that were set, which the client adopts (the server's
    /// spelling, "ISO, MDY" for "ISO", so that they match next time).
    public mutating func applied(_ changes: [(name: String, value: String)]) -> [(name: String, value: String)] {
        var reported: [(name: String, value: String)] = []
        for (name, value) in changes {
            if SessionParameters.isReported(name) {
                reported.append((name, self[name] ?? value))
            } else {
                self[name] = value
            }
        }
        return reported
    }
}
