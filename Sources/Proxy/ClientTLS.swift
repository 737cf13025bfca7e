import Foundation
import LifeguardConfig
import NIOSSL
import ProxyCore

/// Lifeguard's TLS towards clients (`client_tls_*`): the context new connections get, made from the files at start
/// and again on every reload. Connections already encrypted keep the context they started with.
struct ClientTLS: Sendable {
    let mode: ClientTLSMode
    let context: NIOSSLContext
    /// The certificate files loaded and when each expires, for `lifeguard_tls_certificate_expiry_timestamp_seconds`.
    let expiries: [(file: String, notAfter: Date)]

    var policy: ClientTLSPolicy {
        switch self.mode {
        case .disable: .unavailable
        case .allow, .prefer: .optional
        case .require, .verifyCA, .verifyFull: .required
        }
    }

    /// nil when `client_tls_sslmode` is `disable`. Throws a message naming the setting and what is wrong with its
    /// file: unreadable, not PEM, expired, or a key that does not belong to the certificate.
    static func load(_ configuration: ClientTLSConfiguration, now: Date = Date()) throws(ClientTLSError) -> ClientTLS? {
        guard configuration.isEnabled else { return nil }
        guard let certFile = configuration.certFile, let keyFile = configuration.keyFile else {
            throw ClientTLSError(
                "client_tls_sslmode \(configuration.mode.rawValue) needs client_tls_cert_file and client_tls_key_file"
            )
        }
        var expiries: [(file: String, notAfter: Date)] = []
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certFile)
        } catch {
            throw ClientTLSError("client_tls_cert_file \"\(certFile)\": not a readable PEM certificate (\(error))")
        }
        guard let leaf = chain.first else {
            throw ClientTLSError("client_tls_cert_file \"\(certFile)\": holds no certificate")
        }
        let notAfter = Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter))
        if notAfter < now {
            throw ClientTLSError(
                "client_tls_cert_file \"\(certFile)\": the certificate expired on \(notAfter.formatted(.iso8601))"
            )
        }
        expiries.append((certFile, notAfter))
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw ClientTLSError("client_tls_key_file \"\(keyFile)\": not a readable PEM private key (\(error))")
        }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        tls.minimumTLSVersion = configuration.protocols.contains(.tlsv1_2) ? .tlsv12 : .tlsv13
        tls.maximumTLSVersion = configuration.protocols.contains(.tlsv1_3) ? .tlsv13 : .tlsv12
        if let ciphers = configuration.ciphers { tls.cipherSuites = ciphers }
        // Direct TLS (PostgreSQL 17 clients) must name the protocol; after an SSLRequest it is optional.
        tls.applicationProtocols = ["postgresql"]
        if configuration.mode == .verifyCA || configuration.mode == .verifyFull {
            guard let caFile = configuration.caFile else {
                throw ClientTLSError("client_tls_sslmode \(configuration.mode.rawValue) needs client_tls_ca_file")
            }
            let roots: [NIOSSLCertificate]
            do {
                roots = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw ClientTLSError("client_tls_ca_file \"\(caFile)\": not a readable PEM certificate (\(error))")
            }
            guard !roots.isEmpty else { throw ClientTLSError("client_tls_ca_file \"\(caFile)\": holds no certificate") }
            if let earliest = ServerTLS.earliestExpiry(roots) { expiries.append((caFile, earliest)) }
            tls.trustRoots = .certificates(roots)
            // A client certificate is required and must chain to these CAs; names are Lifeguard's to check.
            tls.certificateVerification = .noHostnameVerification
        }
        do {
            let context = try NIOSSLContext(configuration: tls)
            return ClientTLS(mode: configuration.mode, context: context, expiries: expiries)
        } catch {
            throw ClientTLSError(
                "client_tls_key_file \"\(keyFile)\" or client_tls_ciphers: TLS could not be set up (\(error)); "
                    + "the key must belong to client_tls_cert_file and the cipher list must be OpenSSL's syntax"
            )
        }
    }

    /// The common name of a client certificate: the user, with `auth_type = cert`.
    static func commonName(of certificate: NIOSSLCertificate) -> String? {
        certificate.subjectName.last { $0.type == .commonName }?.value
    }
}

/// A `client_tls_*` setting whose file cannot be used; the message names it.
struct ClientTLSError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
