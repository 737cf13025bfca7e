import Foundation
import Testing
import WebConfig

@Suite struct WebConfigurationLoadingTests {
    /// A hash of "scrape-secret" at cost 4 (fast), made with libxcrypt.
    static let hash = "$2y$04$abcdefghijklmnopqrstuuKLvVYiVwiPwoRaKwUkZKXFafd3RmqEi"

    /// The problem lines of a web configuration that must not load, with the directory's path shortened to `DIR`.
    static func problems(
        _ yaml: String,
        in directory: TestDirectory,
        sourceLocation: SourceLocation = #_sourceLocation
    )
        -> [String]
    {
        let file = try! directory.write("web.yml", yaml)
        do {
            _ = try WebConfiguration.load(file: file)
            Issue.record("the web configuration loaded", sourceLocation: sourceLocation)
            return []
        } catch {
            return error.problems.map { $0.description.replacing(directory.path, with: "DIR") }
        }
    }

    @Test func anEmptyFileServesPlainHTTPWithoutAuthentication() throws {
        let directory = try TestDirectory()
        for text in ["", "{}\n", "# nothing\n", "tls_server_config:\nbasic_auth_users:\n"] {
            let configuration = try WebConfiguration.load(file: directory.write("web.yml", text))
            #expect(configuration.tls == nil)
            #expect(configuration.basicAuthUsers.isEmpty)
            #expect(configuration.certificates.isEmpty)
            #expect(configuration.summary == "plain HTTP, no authentication")
        }
    }

    @Test func aCompleteConfigurationWithPathsRelativeToTheFile() throws {
        let directory = try TestDirectory()
        let notAfter = Date(timeIntervalSince1970: 1_900_000_000)
        let server = try TestPKI.selfSigned(notAfter: notAfter)
        let ca = try TestPKI.selfSigned(commonName: "client CA", notAfter: Date(timeIntervalSince1970: 1_950_000_000))
        try directory.write("server.crt", server.certificate)
        try directory.write("server.key", server.key)
        try directory.write("ca.crt", ca.certificate)
        let file = try directory.write(
            "web.yml",
            """
            tls_server_config:
              cert_file: server.crt
              key_file: server.key
              client_ca_file: ca.crt
              client_auth_type: RequireAndVerifyClientCert
              min_version: TLS13
            basic_auth_users:
              prometheus: \(Self.hash)
            """
        )
        let configuration = try WebConfiguration.load(file: file)
        let tls = try #require(configuration.tls)
        #expect(tls.certificate.file == directory.path + "/server.crt")
        #expect(tls.certificate.notAfter == notAfter)
        #expect(tls.keyFile == directory.path + "/server.key")
        #expect(tls.privateKey.pem == server.key)
        #expect(tls.clientCA?.file == directory.path + "/ca.crt")
        #expect(tls.clientAuthType == .requireAndVerifyClientCert)
        #expect(tls.minVersion == .tls13)
        #expect(tls.maxVersion == .tls13)
        #expect(tls.gnuTLSPriorities == "NORMAL:-VERS-ALL:+VERS-TLS1.3")
        #expect(configuration.certificates.map(\.file) == [tls.certificate.file, directory.path + "/ca.crt"])
        #expect(configuration.basicAuthUsers == ["prometheus": BcryptHash(Self.hash)])
        #expect(
            configuration.summary
                == "HTTPS (TLS13 to TLS13, client certificates: RequireAndVerifyClientCert), basic auth (1 user)"
        )
        #expect(
            configuration.expiredCertificates(at: Date(timeIntervalSince1970: 1_920_000_000)).map(\.notAfter) == [
                notAfter
            ]
        )
        #expect(configuration.expiredCertificates(at: Date(timeIntervalSince1970: 1_800_000_000)).isEmpty)
    }

    @Test func theDefaultsAreTLS12ToTLS13WithoutClientCertificates() throws {
        let directory = try TestDirectory()
        let server = try TestPKI.selfSigned()
        let certificate = try directory.write("server.crt", server.certificate)
        let key = try directory.write("server.key", server.key)
        let file = try directory.write(
            "web.yml",
            "tls_server_config:\n  cert_file: \(certificate)\n  key_file: \(key)\n"
        )
        let tls = try #require(try WebConfiguration.load(file: file).tls)
        #expect(tls.clientAuthType == .noClientCert)
        #expect(tls.clientCA == nil)
        #expect(tls.gnuTLSPriorities == "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2")
    }

    @Test func unknownKeysAreErrorsNamingTheKeyAndLine() throws {
        let directory = try TestDirectory()
        #expect(
            Self.problems("basic_auth_user:\n  a: b\n", in: directory) == [
                #"DIR/web.yml:1: basic_auth_user: unknown key; did you mean "basic_auth_users"?"#
            ]
        )
        #expect(
            Self.problems("tls_server_config:\n  cert_file: a\n  key_file: b\n  certfile: c\n", in: directory)
                .contains(#"DIR/web.yml:4: tls_server_config.certfile: unknown key; did you mean "cert_file"?"#)
        )
    }

    @Test(arguments: ["cipher_suites: [TLS_AES_128_GCM_SHA256]", "client_allowed_sans: [a]", "cert: inline"])
    func keysOfTheFormatLifeguardDoesNotImplementAreErrors(line: String) throws {
        let directory = try TestDirectory()
        let key = String(line.prefix { $0 != ":" })
        let problems = Self.problems("tls_server_config:\n  \(line)\n", in: directory)
        #expect(
            problems.contains(
                "DIR/web.yml:2: tls_server_config.\(key): not supported by Lifeguard's metrics endpoint; remove it"
            ),
            "\(problems)"
        )
        #expect(
            Self.problems("http_server_config:\n  http2: false\n", in: directory) == [
                "DIR/web.yml:1: http_server_config: not supported by Lifeguard's metrics endpoint; remove it"
            ]
        )
    }

    @Test func clientAuthenticationProblems() throws {
        let directory = try TestDirectory()
        let server = try TestPKI.selfSigned()
        try directory.write("server.crt", server.certificate)
        try directory.write("server.key", server.key)
        try directory.write("ca.crt", server.certificate)
        let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        #expect(
            Self.problems(base + "  client_auth_type: RequireCert\n", in: directory) == [
                "DIR/web.yml:4: tls_server_config.client_auth_type: unknown client_auth_type \"RequireCert\"; "
                    + "expected one of NoClientCert, RequestClientCert, RequireAnyClientCert, "
                    + "VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ]
        )
        #expect(
            Self.problems(base + "  client_auth_type: RequireAndVerifyClientCert\n", in: directory) == [
                "DIR/web.yml:4: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file, "
                    + "the CA certificates that sign client certificates"
            ]
        )
        #expect(
            Self.problems(base + "  client_ca_file: ca.crt\n", in: directory) == [
                "DIR/web.yml:4: tls_server_config.client_ca_file: client_ca_file is set but client_auth_type is "
                    + "NoClientCert; set client_auth_type: RequireAndVerifyClientCert (or remove client_ca_file)"
            ]
        )
        // exporter-toolkit's older name still works.
        let file = try directory.write("web.yml", base + "  client_auth_type: RequireClientCert\n")
        #expect(try WebConfiguration.load(file: file).tls?.clientAuthType == .requireAnyClientCert)
    }

    @Test func tlsVersions() throws {
        let directory = try TestDirectory()
        let server = try TestPKI.selfSigned()
        try directory.write("server.crt", server.certificate)
        try directory.write("server.key", server.key)
        let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        #expect(
            Self.problems(base + "  min_version: TLS11\n", in: directory) == [
                "DIR/web.yml:4: tls_server_config.min_version: TLS11 is not supported by Lifeguard; use TLS12 or TLS13"
            ]
        )
        #expect(
            Self.problems(base + "  max_version: TLS14\n", in: directory) == [
                "DIR/web.yml:4: tls_server_config.max_version: unknown TLS version \"TLS14\"; expected TLS12 or TLS13"
            ]
        )
        #expect(
            Self.problems(base + "  min_version: TLS13\n  max_version: TLS12\n", in: directory) == [
                "DIR/web.yml:4: tls_server_config.min_version: min_version is above max_version"
            ]
        )
    }

    @Test func certificateAndKeyFiles() throws {
        let directory = try TestDirectory()
        let server = try TestPKI.selfSigned()
        let other = try TestPKI.selfSigned()
        try directory.write("server.crt", server.certificate)
        try directory.write("other.key", other.key)
        try directory.write("garbage.crt", "not a certificate\n")
        #expect(
            Self.problems("tls_server_config:\n  cert_file: server.crt\n", in: directory) == [
                "DIR/web.yml:2: tls_server_config: missing key_file"
            ]
        )
        #expect(
            Self.problems("tls_server_config:\n  cert_file: missing.crt\n  key_file: other.key\n", in: directory) == [
                "DIR/web.yml:2: tls_server_config.cert_file: cannot read DIR/missing.crt: no such file"
            ]
        )
        #expect(
            Self.problems("tls_server_config:\n  cert_file: garbage.crt\n  key_file: other.key\n", in: directory) == [
                "DIR/web.yml:2: tls_server_config.cert_file: DIR/garbage.crt: no CERTIFICATE block in the file"
            ]
        )
        #expect(
            Self.problems("tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n", in: directory) == [
                "DIR/web.yml:3: tls_server_config.key_file: the key does not belong to the first certificate of cert_file"
            ]
        )
        let problems = Self.problems(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n",
            in: directory
        )
        #expect(
            problems == ["DIR/web.yml:3: tls_server_config.key_file: DIR/server.crt: no PEM private key in the file"]
        )
    }

    @Test func usersMustHaveBcryptHashesAndTheValueIsNeverQuoted() throws {
        let directory = try TestDirectory()
        let problems = Self.problems(
            "basic_auth_users:\n  alice: hunter2-plain-text\n  bob: $1$abcdefgh$hunter2hunter2hunter2\n",
            in: directory
        )
        #expect(problems.count == 2)
        #expect(problems.first?.hasPrefix("DIR/web.yml:2: basic_auth_users.alice: not a bcrypt hash") == true)
        #expect(problems.last?.hasPrefix("DIR/web.yml:3: basic_auth_users.bob: not a bcrypt hash") == true)
        for line in problems { #expect(!line.contains("hunter2")) }
    }

    @Test func aYAMLSyntaxErrorDoesNotQuoteTheLine() throws {
        let directory = try TestDirectory()
        let problems = Self.problems("basic_auth_users:\n  alice: \(Self.hash)\n   bob: [\(Self.hash)\n", in: directory)
        #expect(problems.count == 1)
        #expect(problems.first?.hasPrefix("DIR/web.yml:3: invalid YAML: ") == true, "\(problems)")
        #expect(!problems.joined().contains("abcdefghijklmnopqrstuu"))
        #expect(
            Self.problems("basic_auth_users:\n  alice: \(Self.hash)\n  alice: \(Self.hash)\n", in: directory).first?
                .contains("duplicate key \"alice\"") == true
        )
    }

    @Test func anUnreadableFile() throws {
        #expect(throws: WebConfigurationError.self) { try WebConfiguration.load(file: "/nonexistent/web.yml") }
        do {
            _ = try WebConfiguration.load(file: "/nonexistent/web.yml")
        } catch {
            #expect(error.description == "/nonexistent/web.yml: cannot read the web configuration: no such file")
        }
    }

    @Test(arguments: [
        ("$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG", true),
        ("$2b$04$5.3AGyIY2b55nPaCLnR6B.ex020vlgCtEhrZ90GZSwnWmv8UHofaa", true),
        ("$2a$31$abcdefghijklmnopqrstuuKLvVYiVwiPwoRaKwUkZKXFafd3RmqEi", true),
        ("$2y$03$abcdefghijklmnopqrstuuKLvVYiVwiPwoRaKwUkZKXFafd3RmqEi", false),
        ("$2x$10$abcdefghijklmnopqrstuuKLvVYiVwiPwoRaKwUkZKXFafd3RmqEi", false),
        ("$2y$10$abcdefghijklmnopqrstuuKLvVYiVwiPwoRaKwUkZKXFafd3RmqE", false),
        ("$2y$10$abcdefghijklmnopqrstuuKLvVYiVwiPwoRaKwUkZKXFafd3Rmq!i", false),
        ("$6$salt$hash", false),
        ("secret", false),
    ])
    func bcryptShape(hash: String, valid: Bool) {
        #expect(BcryptHash.looksLikeBcrypt(hash) == valid)
        #expect("\(BcryptHash(hash))" == "<bcrypt hash>")
    }
}
