import Foundation
import SwiftASN1
import X509
import Yams

extension WebConfiguration {
    /// Reads and checks the web configuration at `file`, and the files it names (relative paths are resolved against
    /// its directory, as exporter-toolkit does): the certificate and key must parse and belong together, the client
    /// CA file must hold certificates, every `basic_auth_users` value must be a bcrypt hash. Unknown keys are errors,
    /// and so are keys of the format that Lifeguard does not implement.
    ///
    /// Expired certificates are not an error here (see ``expiredCertificates(at:)``): a sidecar that refused to start
    /// over its metrics certificate would take its application's database connections down with it.
    ///
    /// - Throws: ``WebConfigurationError`` with every problem found; no message contains a key, hash or password.
    public static func load(file: String) throws(WebConfigurationError) -> WebConfiguration {
        var loader = WebConfigurationLoader(file: file)
        return try loader.load()
    }
}

/// One pass over a web configuration file, collecting every problem.
private struct WebConfigurationLoader {
    let file: String
    var problems: [WebConfigurationError.Problem] = []

    static let topLevelKeys = ["tls_server_config", "basic_auth_users"]
    static let unsupportedTopLevelKeys = ["http_server_config", "rate_limit"]
    static let tlsKeys = ["cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"]
    static let unsupportedTLSKeys = [
        "cert", "key", "client_ca", "client_allowed_sans", "cipher_suites", "curve_preferences",
        "prefer_server_cipher_suites",
    ]

    init(file: String) {
        self.file = file
    }

    mutating func load() throws(WebConfigurationError) -> WebConfiguration {
        var configuration = WebConfiguration(file: self.file)
        guard let root = self.readYAML() else { throw WebConfigurationError(problems: self.problems) }
        if case .mapping(let mapping)? = root {
            for (keyNode, value) in mapping {
                let key = keyNode.string ?? ""
                switch key {
                case "tls_server_config":
                    configuration.tls = self.readTLS(value)
                case "basic_auth_users":
                    configuration.basicAuthUsers = self.readUsers(value)
                default:
                    self.reportKey(
                        key,
                        at: keyNode,
                        prefix: nil,
                        known: Self.topLevelKeys,
                        unsupported: Self.unsupportedTopLevelKeys
                    )
                }
            }
        } else if let root, !Self.isNull(root) {
            self.report(root, key: nil, "expected a mapping with tls_server_config and basic_auth_users")
        }
        guard self.problems.isEmpty else { throw WebConfigurationError(problems: self.problems) }
        return configuration
    }

    // MARK: The file

    /// The document's root node (nil inside for an empty document), or nil after reporting why there is none.
    mutating func readYAML() -> Node?? {
        guard let data = Self.contents(of: self.file) else {
            let reason = FileManager.default.fileExists(atPath: self.file) ? "permission denied" : "no such file"
            self.problems.append(
                .init(location: self.file, key: nil, message: "cannot read the web configuration: \(reason)")
            )
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            self.problems.append(
                .init(location: self.file, key: nil, message: "the web configuration is not UTF-8 text")
            )
            return nil
        }
        do {
            return .some(try Yams.compose(yaml: text))
        } catch let error as YamlError {
            // Yams's own description quotes the offending line, which may hold a hash: only its position is kept.
            let (problem, mark) = Self.describe(error)
            let location = mark.map { "\(self.file):\($0.line)" } ?? self.file
            self.problems.append(.init(location: location, key: nil, message: "invalid YAML: \(problem)"))
            return nil
        } catch {
            self.problems.append(.init(location: self.file, key: nil, message: "invalid YAML"))
            return nil
        }
    }

    static func describe(_ error: YamlError) -> (String, Mark?) {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _):
            return (problem, mark)
        case .composer(_, let problem, let mark, _):
            return (problem, mark)
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ("duplicate key \(duplicates.map { "\"\($0)\"" }.joined(separator: ", "))", context.mark)
        default:
            return ("cannot be parsed", nil)
        }
    }

    // MARK: tls_server_config

    mutating func readTLS(_ node: Node) -> TLSServerConfiguration? {
        if Self.isNull(node) { return nil }
        guard case .mapping(let mapping) = node else {
            self.report(node, key: "tls_server_config", "expected a mapping with cert_file and key_file")
            return nil
        }
        var values: [String: (String, Node)] = [:]
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            guard Self.tlsKeys.contains(key) else {
                self.reportKey(
                    key,
                    at: keyNode,
                    prefix: "tls_server_config",
                    known: Self.tlsKeys,
                    unsupported: Self.unsupportedTLSKeys
                )
                continue
            }
            guard let text = self.scalarString(value, key: "tls_server_config.\(key)") else { continue }
            if !text.isEmpty { values[key] = (text, value) }
        }
        let before = self.problems.count

        var clientAuthType = ClientAuthType.noClientCert
        if let (text, node) = values["client_auth_type"] {
            if let type = ClientAuthType(rawValue: text) ?? ClientAuthType.aliases[text] {
                clientAuthType = type
            } else {
                self.report(
                    node,
                    key: "tls_server_config.client_auth_type",
                    "unknown client_auth_type \"\(text)\"; expected one of "
                        + ClientAuthType.allCases.map(\.rawValue).joined(separator: ", ")
                )
            }
        }
        let minVersion = self.version(values["min_version"], key: "min_version") ?? .tls12
        let maxVersion = self.version(values["max_version"], key: "max_version") ?? .tls13
        if minVersion > maxVersion, let (_, node) = values["min_version"] {
            self.report(node, key: "tls_server_config.min_version", "min_version is above max_version")
        }

        var certificate: (CertificateFile, [Certificate])? = nil
        if let (path, node) = values["cert_file"] {
            certificate = self.readCertificates(path, node: node, key: "tls_server_config.cert_file")
        } else {
            self.report(node, key: "tls_server_config", "missing cert_file")
        }
        var privateKey: (String, PrivateKeyPEM, Certificate.PrivateKey)? = nil
        if let (path, node) = values["key_file"] {
            privateKey = self.readPrivateKey(path, node: node)
        } else {
            self.report(node, key: "tls_server_config", "missing key_file")
        }
        if let (_, certificates) = certificate, let (_, _, key) = privateKey, let leaf = certificates.first,
            leaf.publicKey != key.publicKey, let (_, keyNode) = values["key_file"]
        {
            self.report(
                keyNode,
                key: "tls_server_config.key_file",
                "the key does not belong to the first certificate of cert_file"
            )
        }

        var clientCA: CertificateFile? = nil
        if let (path, node) = values["client_ca_file"] {
            clientCA = self.readCertificates(path, node: node, key: "tls_server_config.client_ca_file")?.0
            if clientAuthType == .noClientCert {
                self.report(
                    node,
                    key: "tls_server_config.client_ca_file",
                    "client_ca_file is set but client_auth_type is NoClientCert; "
                        + "set client_auth_type: RequireAndVerifyClientCert (or remove client_ca_file)"
                )
            }
        } else if clientAuthType.verifies {
            self.report(
                values["client_auth_type"]?.1 ?? node,
                key: "tls_server_config.client_auth_type",
                "\(clientAuthType.rawValue) needs client_ca_file, the CA certificates that sign client certificates"
            )
        }

        guard self.problems.count == before, let (certificateFile, _) = certificate, let (keyPath, pem, _) = privateKey
        else { return nil }
        return TLSServerConfiguration(
            certificate: certificateFile,
            keyFile: keyPath,
            privateKey: pem,
            clientCA: clientCA,
            clientAuthType: clientAuthType,
            minVersion: minVersion,
            maxVersion: maxVersion
        )
    }

    mutating func version(_ value: (String, Node)?, key: String) -> TLSVersion? {
        guard let (text, node) = value else { return nil }
        if let version = TLSVersion(rawValue: text) { return version }
        let accepted = TLSVersion.allCases.map(\.rawValue).joined(separator: " or ")
        if TLSVersion.unsupported.contains(text) {
            self.report(node, key: "tls_server_config.\(key)", "\(text) is not supported by Lifeguard; use \(accepted)")
        } else {
            self.report(node, key: "tls_server_config.\(key)", "unknown TLS version \"\(text)\"; expected \(accepted)")
        }
        return nil
    }

    /// Reads a PEM file of one or more certificates; nil after reporting why not.
    mutating func readCertificates(_ path: String, node: Node, key: String) -> (CertificateFile, [Certificate])? {
        let resolved = self.resolve(path)
        guard let text = self.readText(resolved, node: node, key: key) else { return nil }
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text).filter { $0.discriminator == "CERTIFICATE" }
        } catch {
            self.report(node, key: key, "\(resolved): not a PEM file of certificates")
            return nil
        }
        var certificates: [Certificate] = []
        for (index, document) in documents.enumerated() {
            do {
                certificates.append(try Certificate(pemDocument: document))
            } catch {
                self.report(node, key: key, "\(resolved): certificate \(index + 1) cannot be parsed as X.509")
                return nil
            }
        }
        guard let earliest = certificates.map(\.notValidAfter).min() else {
            self.report(node, key: key, "\(resolved): no CERTIFICATE block in the file")
            return nil
        }
        return (CertificateFile(file: resolved, pem: text, notAfter: earliest), certificates)
    }

    /// Reads the private key; nil after reporting why not. The message never quotes the file's contents.
    mutating func readPrivateKey(_ path: String, node: Node) -> (String, PrivateKeyPEM, Certificate.PrivateKey)? {
        let key = "tls_server_config.key_file"
        let resolved = self.resolve(path)
        guard let text = self.readText(resolved, node: node, key: key) else { return nil }
        guard
            let document = try? PEMDocument.parseMultiple(pemString: text).first(where: {
                $0.discriminator.hasSuffix("PRIVATE KEY")
            })
        else {
            self.report(node, key: key, "\(resolved): no PEM private key in the file")
            return nil
        }
        do {
            return (resolved, PrivateKeyPEM(text), try Certificate.PrivateKey(pemDocument: document))
        } catch {
            self.report(
                node,
                key: key,
                "\(resolved): the \(document.discriminator) cannot be read "
                    + "(expected an unencrypted RSA, ECDSA P-256/P-384/P-521 or Ed25519 key)"
            )
            return nil
        }
    }

    mutating func readText(_ path: String, node: Node, key: String) -> String? {
        guard let data = Self.contents(of: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"
            self.report(node, key: key, "cannot read \(path): \(reason)")
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            self.report(node, key: key, "\(path) is not PEM text")
            return nil
        }
        return text
    }

    /// A file's bytes, also of character devices (`/dev/null` is an empty web configuration), which
    /// `FileManager.contents(atPath:)` refuses.
    static func contents(of path: String) -> Data? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        return try? handle.readToEnd() ?? Data()
    }

    /// exporter-toolkit resolves relative paths against the web configuration's directory.
    func resolve(_ path: String) -> String {
        guard !path.hasPrefix("/") else { return path }
        let directory = (self.file as NSString).deletingLastPathComponent
        return directory.isEmpty ? path : (directory as NSString).appendingPathComponent(path)
    }

    // MARK: basic_auth_users

    mutating func readUsers(_ node: Node) -> [String: BcryptHash] {
        if Self.isNull(node) { return [:] }
        guard case .mapping(let mapping) = node else {
            self.report(node, key: "basic_auth_users", "expected a mapping of user names to bcrypt hashes")
            return [:]
        }
        var users: [String: BcryptHash] = [:]
        for (keyNode, value) in mapping {
            guard let user = keyNode.string, !user.isEmpty else {
                self.report(keyNode, key: "basic_auth_users", "a user name must be a non-empty string")
                continue
            }
            let key = "basic_auth_users.\(user)"
            if user.contains(":") {
                self.report(keyNode, key: key, "a user name cannot contain \":\" (HTTP basic auth separates with it)")
                continue
            }
            guard case .scalar(let scalar) = value, BcryptHash.looksLikeBcrypt(scalar.string) else {
                // Never quote the value: it may be a password written in plain text by mistake.
                self.report(
                    value,
                    key: key,
                    "not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost, and 53 characters, "
                        + "as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)"
                )
                continue
            }
            users[user] = BcryptHash(scalar.string)
        }
        return users
    }

    // MARK: Helpers

    mutating func scalarString(_ node: Node, key: String) -> String? {
        if Self.isNull(node) { return "" }
        guard case .scalar(let scalar) = node else {
            self.report(node, key: key, "expected a string")
            return nil
        }
        return scalar.string
    }

    static func isNull(_ node: Node) -> Bool {
        if case .scalar = node, node.null != nil { return true }
        return false
    }

    mutating func reportKey(_ key: String, at node: Node, prefix: String?, known: [String], unsupported: [String]) {
        let path = [prefix, key].compactMap { $0 }.joined(separator: ".")
        if unsupported.contains(key) {
            self.report(node, key: path, "not supported by Lifeguard's metrics endpoint; remove it")
        } else {
            let hint = known.min { WebConfiguration.distance(key, $0) < WebConfiguration.distance(key, $1) }
                .flatMap { WebConfiguration.distance(key, $0) <= 3 ? $0 : nil }
            self.report(node, key: path, "unknown key" + (hint.map { "; did you mean \"\($0)\"?" } ?? ""))
        }
    }

    mutating func report(_ node: Node, key: String?, _ message: String) {
        let location = node.mark.map { "\(self.file):\($0.line)" } ?? self.file
        self.problems.append(.init(location: location, key: key, message: message))
    }
}

extension WebConfiguration {
    /// Levenshtein distance, for "did you mean" hints (the Lifeguard configuration's hints use it too).
    package static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
