import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `lifeguard_tls_certificate_expiry_timestamp_seconds{file}`: when each loaded certificate file expires, keyed by its
/// path.
///
/// Whatever loads a certificate file registers it here: the metrics endpoint's web configuration does for its
/// `cert_file` and `client_ca_file`, and the proxy's TLS certificates belong here too, so that one alert covers them
/// all. A file holding several certificates (a chain, a CA bundle) is registered with the earliest `notAfter`. The
/// registry does not know who registered a file: two users of one path share its series, and whoever stops loading a
/// file calls ``remove(file:)``.
public final class CertificateExpiry: Sendable {
    private struct Registrations {
        var series: [String: GaugeSeries] = [:]
        /// `series`' values sorted by file, so that a scrape copies an array instead of sorting.
        var sorted: [GaugeSeries] = []
    }

    private let registrations = Mutex(Registrations())

    init() {}

    /// Sets the expiry of the certificate file at `file` (creating its series on first use).
    public func set(file: String, expiry: Date) {
        let series = self.registrations.withLock { registrations in
            if let existing = registrations.series[file] { return existing }
            let series = GaugeSeries(.tlsCertificateExpiryTimestampSeconds, [("file", file)])
            registrations.series[file] = series
            registrations.sorted = registrations.series.sorted { $0.key < $1.key }.map(\.value)
            return series
        }
        // Whole seconds: notAfter has no finer resolution in X.509.
        series.set(Int(expiry.timeIntervalSince1970.rounded(.down)))
    }

    /// Stops exporting the series of `file`.
    public func remove(file: String) {
        self.registrations.withLock { registrations in
            guard registrations.series.removeValue(forKey: file) != nil else { return }
            registrations.sorted = registrations.series.sorted { $0.key < $1.key }.map(\.value)
        }
    }

    /// The files registered now, sorted.
    public var files: [String] {
        self.registrations.withLock { $0.series.keys.sorted() }
    }

    func emit(into buffer: inout [UInt8]) {
        for series in self.registrations.withLock({ $0.sorted }) { series.emit(into: &buffer) }
    }
}
