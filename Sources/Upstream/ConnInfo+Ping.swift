import CLibPQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What libpq's `PQpingParams` learned about the upstream server.
public enum PingResult: Sendable, Hashable, CustomStringConvertible {
    /// The server accepts connections.
    case ok
    /// The server answered but refuses connections now (starting up, shutting down, or crash recovery).
    case rejected
    /// Nothing answered: the server is down, the port is closed, the name does not resolve, or the timeout passed.
    case noResponse
    /// libpq did not try, because the connection options are unusable; `reason` is libpq's message.
    case noAttempt(reason: String)

    /// True only for ``ok``.
    public var isUp: Bool { self == .ok }

    public var description: String {
        switch self {
        case .ok: "accepting connections"
        case .rejected: "the server rejects connections (starting up, shutting down or in recovery)"
        case .noResponse: "no response from the server"
        case .noAttempt(let reason): "no connection attempted: \(reason)"
        }
    }
}

extension ConnInfo {
    /// Asks the upstream server whether it accepts connections, with libpq's `PQpingParams`.
    ///
    /// The probe never authenticates, so it needs no password and leaves no failed login in the server log. It
    /// blocks the calling thread for up to `connectTimeout` per host; call it from a background task or thread.
    /// libpq counts the timeout in whole seconds (rounded up here) and treats anything below 2 s as 2 s.
    public func ping(connectTimeout: Duration = .seconds(2)) -> PingResult {
        let (whole, fraction) = connectTimeout.components
        let seconds = max(1, Int(whole) + (fraction > 0 ? 1 : 0))
        // The probe never authenticates: the password stays out of it.
        var pairs = self.explicitOptions.filter { !$0.isSecret && $0.keyword != "connect_timeout" }.map {
            ($0.keyword, $0.value)
        }
        pairs.append(("connect_timeout", String(seconds)))
        return Self.withCStringArrays(pairs) { keywords, values in
            switch PQpingParams(keywords, values, 0) {
            case PQPING_OK: return .ok
            case PQPING_REJECT: return .rejected
            case PQPING_NO_RESPONSE: return .noResponse
            default: return .noAttempt(reason: self.optionsProblem(keywords, values))
            }
        }
    }

    /// Why libpq refuses these options: `PQconnectStartParams` validates them and fails before opening a socket.
    private func optionsProblem(
        _ keywords: UnsafePointer<UnsafePointer<CChar>?>,
        _ values: UnsafePointer<UnsafePointer<CChar>?>
    ) -> String {
        guard let connection = PQconnectStartParams(keywords, values, 0) else { return "out of memory" }
        defer { PQfinish(connection) }
        guard PQstatus(connection) == CONNECTION_BAD, let message = PQerrorMessage(connection) else {
            return "libpq refused the connection options"
        }
        var text = String(cString: message)
        while text.last?.isNewline == true { text.removeLast() }
        return SecretScrubber.scrub(text, secrets: self.options.filter(\.isSecret).map(\.value))
    }

    /// Runs `body` with NULL-terminated C arrays of keywords and values, as libpq's `*Params` functions take them.
    private static func withCStringArrays<Result>(
        _ pairs: [(String, String)],
        _ body: (UnsafePointer<UnsafePointer<CChar>?>, UnsafePointer<UnsafePointer<CChar>?>) -> Result
    ) -> Result {
        let keywords = pairs.map { UnsafePointer(strdup($0.0)) } + [nil]
        let values = pairs.map { UnsafePointer(strdup($0.1)) } + [nil]
        defer {
            for pointer in keywords + values { free(UnsafeMutableRawPointer(mutating: pointer)) }
        }
        return keywords.withUnsafeBufferPointer { keywordBuffer in
            values.withUnsafeBufferPointer { valueBuffer in
                body(keywordBuffer.baseAddress!, valueBuffer.baseAddress!)
            }
        }
    }
}
