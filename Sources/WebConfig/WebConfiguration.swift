import Foundation

/// The metrics endpoint's web configuration, in the format of Prometheus's exporter-toolkit (`--web.config.file` of
/// node_exporter): HTTPS with `tls_server_config`, and HTTP basic authentication with `basic_auth_users`.
///
/// Made by ``load(file:)``, which reads the certificates and the key too: a value of this type holds everything the
/// HTTP server needs, checked. An empty file is valid and means plain HTTP without authentication, as in
/// exporter-toolkit.
public struct WebConfiguration: Sendable, Equatable {
    /// The YAML file, as named in the configuration.
    public var file: String
    /// HTTPS; nil serves plain HTTP.
    public var tls: TLSServerConfiguration?
    /// User name to bcrypt hash. Empty: no authentication.
    public var basicAuthUsers: [String: BcryptHash]

    public init(file: String, tls: TLSServerConfiguration? = nil, basicAuthUsers: [String: BcryptHash] = [:]) {
        self.file = file
        self.tls = tls
        self.basicAuthUsers = basicAuthUsers
    }

    /// The certificate files loaded (`cert_file`, then `client_ca_file`), each with its earliest expiry.
    public var certificates: [CertificateFile] {
        guard let tls = self.tls else { return [] }
        return [tls.certificate] + (tls.clientCA.map { [$0] } ?? [])
    }

    /// The loaded certificate files whose earliest certificate has expired at `date`.
    public func expiredCertificates(at date: Date) -> [CertificateFile] {
        self.certificates.filter { $0.notAfter <= date }
    }

    /// One line on what the endpoint requires, without any secret: `HTTPS (TLS12 to TLS13, client certificates:
    /// NoClientCert), basic auth (2 users)`.
    public var summary: String {
        var parts: [String] = []
        if let tls = self.tls {
            parts.append(
                "HTTPS (\(tls.minVersion.rawValue) to \(tls.maxVersion.rawValue), "
                    + "client certificates: \(tls.clientAuthType.rawValue))"
            )
        } else {
            parts.append("plain HTTP")
        }
        let users = self.basicAuthUsers.count
        parts.append(users == 0 ? "no authentication" : "basic auth (\(users) user\(users == 1 ? "" : "s"))")
        return parts.joined(separator: ", ")
    }
}

/// `tls_server_config`: the server's certificate and key, and what is asked of clients.
public struct TLSServerConfiguration: Sendable, Equatable {
    /// `cert_file`: the server certificate (and its chain), PEM.
    public var certificate: CertificateFile
    /// `key_file`, resolved against the web configuration's directory.
    public var keyFile: String
    /// The private key, PEM. Never printed.
    public var privateKey: PrivateKeyPEM
    /// `client_ca_file`: the CAs that sign client certificates, PEM.
    public var clientCA: CertificateFile?
    /// `client_auth_type` (default `NoClientCert`).
    public var clientAuthType: ClientAuthType
    /// `min_version` (default `TLS12`).
    public var minVersion: TLSVersion
    /// `max_version` (default `TLS13`).
    public var maxVersion: TLSVersion

    public init(
        certificate: CertificateFile,
        keyFile: String,
        privateKey: PrivateKeyPEM,
        clientCA: CertificateFile? = nil,
        clientAuthType: ClientAuthType = .noClientCert,
        minVersion: TLSVersion = .tls12,
        maxVersion: TLSVersion = .tls13
    ) {
        self.certificate = certificate
        self.keyFile = keyFile
        self.privateKey = privateKey
        self.clientCA = clientCA
        self.clientAuthType = clientAuthType
        self.minVersion = minVersion
        self.maxVersion = maxVersion
    }

    /// The GnuTLS priority string that allows exactly `minVersion` through `maxVersion`.
    public var gnuTLSPriorities: String {
        let versions = TLSVersion.allCases.filter { $0 >= self.minVersion && $0 <= self.maxVersion }
        return "NORMAL:-VERS-ALL" + versions.reversed().map { ":+\($0.gnuTLSName)" }.joined()
    }
}

/// A PEM file of certificates, as read: the path, its text, and when its first certificate to expire does.
public struct CertificateFile: Sendable, Equatable {
    /// The path as written in the web configuration, resolved against its directory.
    public var file: String
    /// The file's text: one or more `CERTIFICATE` blocks.
    public var pem: String
    /// The earliest `notAfter` of the certificates in the file.
    public var notAfter: Date

    public init(file: String, pem: String, notAfter: Date) {
        self.file = file
        self.pem = pem
        self.notAfter = notAfter
    }
}

/// A private key in PEM. Its description never shows the key.
public struct PrivateKeyPEM: Sendable, Equatable, CustomStringConvertible {
    public var pem: String

    public init(_ pem: String) {
        self.pem = pem
    }

    public var description: String { "<private key>" }
}

/// A bcrypt hash from `basic_auth_users`. Its description never shows the hash.
public struct BcryptHash: Sendable, Hashable, CustomStringConvertible {
    public var value: String

    public init(_ value: String) {
        self.value = value
    }

    /// `$2a$`, `$2b$` or `$2y$`, a two-digit cost from 04 to 31, `$`, then 53 characters of bcrypt's base64 (22 of
    /// salt, 31 of hash). A plain-text password, an MD5 or SHA crypt hash all fail this.
    public static func looksLikeBcrypt(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 60, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "2"),
            [UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "y")].contains(bytes[2]),
            bytes[3] == UInt8(ascii: "$"), bytes[6] == UInt8(ascii: "$"),
            let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost)
        else { return false }
        let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        return bytes[7...].allSatisfy { alphabet.contains($0) }
    }

    public var description: String { "<bcrypt hash>" }
}

/// `client_auth_type`: Go's `tls.ClientAuthType`, as exporter-toolkit names them.
public enum ClientAuthType: String, Sendable, CaseIterable {
    /// No client certificate is asked for (default).
    case noClientCert = "NoClientCert"
    /// Asked for, not required, not verified.
    case requestClientCert = "RequestClientCert"
    /// Required, not verified.
    case requireAnyClientCert = "RequireAnyClientCert"
    /// Verified against `client_ca_file` when sent.
    case verifyClientCertIfGiven = "VerifyClientCertIfGiven"
    /// Required and verified against `client_ca_file`: the only one that authenticates clients.
    case requireAndVerifyClientCert = "RequireAndVerifyClientCert"

    /// exporter-toolkit's older name of `RequireAnyClientCert`, still accepted there.
    static let aliases: [String: ClientAuthType] = ["RequireClientCert": .requireAnyClientCert]

    /// Whether a client certificate is checked against `client_ca_file`, which it then needs.
    public var verifies: Bool {
        self == .verifyClientCertIfGiven || self == .requireAndVerifyClientCert
    }
}

/// `min_version` and `max_version`. exporter-toolkit also takes TLS10 and TLS11; Lifeguard refuses them.
public enum TLSVersion: String, Sendable, CaseIterable, Comparable {
    case tls12 = "TLS12"
    case tls13 = "TLS13"

    /// Versions exporter-toolkit accepts and Lifeguard does not.
    static let unsupported = ["TLS10", "TLS11"]

    var gnuTLSName: String {
        switch self {
        case .tls12: "VERS-TLS1.2"
        case .tls13: "VERS-TLS1.3"
        }
    }

    public static func < (lhs: TLSVersion, rhs: TLSVersion) -> Bool {
        Self.allCases.firstIndex(of: lhs)! < Self.allCases.firstIndex(of: rhs)!
    }
}

/// Everything wrong with a web configuration file, one problem per line. Never contains a key, hash or password.
public struct WebConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        /// `web.yml:7`, or `web.yml` when no line applies.
        public var location: String
        /// `tls_server_config.min_version`; nil for the file as a whole.
        public var key: String?
        public var message: String

        public init(location: String, key: String?, message: String) {
            self.location = location
            self.key = key
            self.message = message
        }

        /// `web.yml:7: tls_server_config.min_version: TLS11 is not supported; use TLS12 or TLS13`
        public var description: String {
            [self.location, self.key, self.message].compactMap { $0 }.joined(separator: ": ")
        }
    }

    public var problems: [Problem]

    public init(problems: [Problem]) {
        self.problems = problems
    }

    public var description: String { self.problems.map(\.description).joined(separator: "\n") }
}
