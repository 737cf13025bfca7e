import Foundation
import NIOCore
import NIOSSL
import Synchronization
import Upstream
import X509

/// How Lifeguard speaks TLS to PostgreSQL, read from the upstream connection string with libpq's keywords and
/// meaning: `sslmode`, `sslrootcert` (a file, or `system`), `sslcert`/`sslkey`, `sslnegotiation`.
///
/// swift-nio-ssl (BoringSSL) does the TLS; swift-certificates checks the server's chain and name, so that a failure
/// can say which check failed (unknown CA, expired, name mismatch) where BoringSSL only says "verify failed".
struct ServerTLS: Sendable {
    enum Mode: String, Sendable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"

        /// TLS or no connection.
        var requiresTLS: Bool { self == .require || self == .verifyCA || self == .verifyFull }
    }

    let mode: Mode
    /// `sslnegotiation=direct`: the TLS handshake starts at once, without an SSLRequest (PostgreSQL 17).
    let direct: Bool
    /// nil with `disable`.
    let context: NIOSSLContext?
    /// The CAs the server's certificate must chain to; nil: not checked (`allow`, `prefer`, `require` without a root
    /// certificate, as libpq).
    let roots: CertificateStore?
    /// `verify-full`: the certificate must name the host.
    let checksName: Bool
    /// The certificate files read (`sslrootcert`, `sslcert`) and the earliest expiry in each, for
    /// `lifeguard_tls_certificate_expiry_timestamp_seconds`.
    private(set) var expiries: [(file: String, notAfter: Date)] = []

    static let disabled = ServerTLS(mode: .disable, direct: false, context: nil, roots: nil, checksName: false)

    private init(mode: Mode, direct: Bool, context: NIOSSLContext?, roots: CertificateStore?, checksName: Bool) {
        self.mode = mode
        self.direct = direct
        self.context = context
        self.roots = roots
        self.checksName = checksName
    }

    /// The TLS settings of `dsn`; throws a message that names the keyword or file at fault.
    init(dsn: ConnInfo) throws(ServerTLSError) {
        let modeText = dsn["sslmode"] ?? "prefer"
        guard let mode = Mode(rawValue: modeText) else {
            throw ServerTLSError(
                "invalid sslmode value: \"\(modeText)\" (use disable, allow, prefer, require, verify-ca or verify-full)"
            )
        }
        let negotiation = dsn["sslnegotiation"] ?? "postgres"
        guard negotiation == "postgres" || negotiation == "direct" else {
            throw ServerTLSError("invalid sslnegotiation value: \"\(negotiation)\" (use postgres or direct)")
        }
        let direct = negotiation == "direct"
        if direct && !mode.requiresTLS {
            throw ServerTLSError(
                "weak sslmode \"\(mode.rawValue)\" may not be used with sslnegotiation=direct (use \"require\", "
                    + "\"verify-ca\", or \"verify-full\")"
            )
        }
        guard mode != .disable else {
            self = .disabled
            return
        }
        // As libpq: an explicit root certificate, or the default one if it exists, makes `require` check the chain.
        let explicitRoot = dsn.option("sslrootcert").flatMap { $0.source == .libpqDefault ? nil : $0.value }
        let defaultRoot = Self.homeFile("root.crt")
        let rootPath: String?
        if let explicitRoot {
            rootPath = explicitRoot
        } else if mode == .verifyCA || mode == .verifyFull || mode == .require,
            FileManager.default.fileExists(atPath: defaultRoot)
        {
            rootPath = defaultRoot
        } else {
            rootPath = nil
        }
        if (mode == .verifyCA || mode == .verifyFull) && rootPath == nil {
            throw ServerTLSError(
                "root certificate file \"\(defaultRoot)\" does not exist; either provide the file (sslrootcert), use "
                    + "the system's trusted roots with sslrootcert=system, or change sslmode to disable server "
                    + "certificate verification"
            )
        }
        var roots: CertificateStore?
        var expiries: [(file: String, notAfter: Date)] = []
        if let rootPath, mode == .require || mode == .verifyCA || mode == .verifyFull {
            let (store, earliest) = try Self.loadRoots(rootPath)
            roots = store
            if let earliest { expiries.append((rootPath, earliest)) }
        }

        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        // Verification is ours (``verify``), through the custom callback; BoringSSL's own is off.
        configuration.certificateVerification = roots == nil ? .none : .noHostnameVerification
        if direct { configuration.applicationProtocols = ["postgresql"] }
        if let certPath = dsn.option("sslcert").flatMap({ $0.source == .libpqDefault ? nil : $0.value }) {
            let keyPath = dsn["sslkey"] ?? Self.homeFile("postgresql.key")
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(certPath)
                configuration.certificateChain = chain.map { .certificate($0) }
                if let earliest = Self.earliestExpiry(chain) { expiries.append((certPath, earliest)) }
            } catch {
                throw ServerTLSError("could not load client certificate file \"\(certPath)\": \(error)")
            }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem))
            } catch {
                throw ServerTLSError("could not load private key file \"\(keyPath)\": \(error)")
            }
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw ServerTLSError("could not set up TLS (sslcert and sslkey must match): \(error)")
        }
        self.init(mode: mode, direct: direct, context: context, roots: roots, checksName: mode == .verifyFull)
        self.expiries = expiries
    }

    private static func homeFile(_ name: String) -> String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return "\(home)/.postgresql/\(name)"
    }

    /// The earliest notAfter among `certificates` (a file's chain or bundle).
    static func earliestExpiry(_ certificates: [NIOSSLCertificate]) -> Date? {
        certificates.map { Date(timeIntervalSince1970: TimeInterval($0.notValidAfter)) }.min()
    }

    /// The CAs of a PEM file and the earliest expiry among them, or the system's (`system`, no expiry exported).
    private static func loadRoots(_ path: String) throws(ServerTLSError) -> (CertificateStore, earliest: Date?) {
        if path == "system" { return (CertificateStore.systemTrustRoots, nil) }
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw ServerTLSError("could not read root certificate file \"\(path)\": \(error)")
        }
        do {
            let store = CertificateStore(try certificates.map { try Certificate(derEncoded: try $0.toDERBytes()) })
            return (store, Self.earliestExpiry(certificates))
        } catch {
            throw ServerTLSError("could not parse root certificate file \"\(path)\": \(error)")
        }
    }

    /// A client handler for one connection to `host`; SNI carries host names, never addresses (RFC 6066).
    func makeHandler(host: String, failure: TLSFailureNote) throws -> NIOSSLClientHandler? {
        guard let context = self.context else { return nil }
        let isAddress = Self.isIPAddress(host)
        let sniName = isAddress ? nil : host
        guard let roots = self.roots else {
            return try NIOSSLClientHandler(context: context, serverHostname: sniName)
        }
        let checksName = self.checksName
        return try NIOSSLClientHandler(context: context, serverHostname: sniName) { presented, promise in
            promise.completeWithTask {
                if let problem = await Self.verify(presented, roots: roots, host: checksName ? host : nil) {
                    failure.set(problem)
                    return .failed
                }
                return .certificateVerified
            }
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// nil when the chain leads to one of `roots` (and names `host`, if given); else what is wrong, in words.
    static func verify(_ presented: [NIOSSLCertificate], roots: CertificateStore, host: String?) async -> String? {
        let chain: [Certificate]
        do {
            chain = try presented.map { try Certificate(derEncoded: try $0.toDERBytes()) }
        } catch {
            return "could not parse the server certificate: \(error)"
        }
        guard let leaf = chain.first else { return "the server sent no certificate" }
        let now = Date()
        if leaf.notValidAfter < now {
            return "server certificate has expired (not valid after \(leaf.notValidAfter.formatted(.iso8601)))"
        }
        if leaf.notValidBefore > now {
            return "server certificate is not yet valid (not valid before \(leaf.notValidBefore.formatted(.iso8601)))"
        }
        let intermediates = CertificateStore(chain.dropFirst())
        var chainVerifier = Verifier(rootCertificates: roots) { RFC5280Policy() }
        if case .couldNotValidate(let failures) = await chainVerifier.validate(leaf: leaf, intermediates: intermediates)
        {
            let reason = failures.first.map { "\($0.policyFailureReason)" }
            if let reason, reason.contains("has expired") {
                return "a certificate in the server's chain has expired"
            }
            return "server certificate is not signed by a trusted certificate authority (sslrootcert)"
                + (reason.map { ": \($0)" } ?? "")
        }
        guard let host else { return nil }
        let isAddress = Self.isIPAddress(host)
        var nameVerifier = Verifier(rootCertificates: roots) {
            RFC5280Policy()
            ServerIdentityPolicy(serverHostname: isAddress ? nil : host, serverIP: isAddress ? host : nil)
        }
        if case .couldNotValidate = await nameVerifier.validate(leaf: leaf, intermediates: intermediates) {
            let names = Self.names(of: leaf)
            return "server certificate for \(names) does not match host name \"\(host)\""
        }
        return nil
    }

    /// The names a certificate is for, as libpq lists them: `"db.example.com" (and 1 other name)`.
    private static func names(of certificate: Certificate) -> String {
        var names: [String] = []
        if let alternatives = try? certificate.extensions.subjectAlternativeNames {
            for name in alternatives {
                switch name {
                case .dnsName(let dns): names.append(dns)
                case .ipAddress(let bytes): names.append(Self.addressText(Array(bytes.bytes)))
                default: break
                }
            }
        }
        if names.isEmpty {
            for attribute in certificate.subject.flatMap({ $0 }) where attribute.type == .RDNAttributeType.commonName {
                names.append("\(attribute.value)")
            }
        }
        guard let first = names.first else { return "(no name)" }
        switch names.count {
        case 1: return "\"\(first)\""
        case 2: return "\"\(first)\" (and 1 other name)"
        default: return "\"\(first)\" (and \(names.count - 1) other names)"
        }
    }

    private static func addressText(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        return stride(from: 0, to: bytes.count, by: 2).map {
            String(format: "%x", Int(bytes[$0]) << 8 | Int(bytes[$0 + 1]))
        }
        .joined(separator: ":")
    }
}

/// A TLS setting or file of the upstream connection string that cannot be used.
struct ServerTLSError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Where a connection's certificate check leaves its reason, for the error that BoringSSL then raises.
final class TLSFailureNote: Sendable {
    private let reason = Mutex<String?>(nil)
    func set(_ reason: String) { self.reason.withLock { $0 = reason } }
    var value: String? { self.reason.withLock { $0 } }
}
