import Crypto
import NIOCore

/// Authenticates one client against an auth_file secret: trust, md5 or SCRAM-SHA-256.
///
/// Pure: call ``start()`` once after the StartupMessage, then ``receive(_:)`` with every frame the client sends
/// until the action is ``Action/authenticated(_:)`` or ``Action/fail(_:reason:)``.
///
/// Which exchange runs (see ``PGAuthSecret`` for the table): `trust` sends AuthenticationOk at once; `md5`
/// runs md5 with a plain or md5 secret and SCRAM with a SCRAM secret (as PostgreSQL does); `scramSHA256` runs
/// SCRAM with a plain or SCRAM secret. An unknown user, or an md5 secret under `scramSHA256`, still gets a
/// full mock exchange and fails at the end with the same 28P01 as a wrong password, so that a client cannot
/// tell which users exist; ``PGServerAuthenticationFailure`` tells the logs the real reason.
///
/// States: `initial` → `waitingForPassword` (md5) | `waitingForSASLInitialResponse` (SCRAM) | done (trust);
/// `waitingForSASLInitialResponse` → `waitingForSASLResponse` → done; any → `failed`.
public struct PGServerAuthenticationStateMachine: Sendable {
    /// The `auth_type` configured for clients.
    public enum Method: String, Sendable, Hashable {
        case trust
        case md5
        case scramSHA256 = "scram-sha-256"
    }

    public enum Action: Sendable, Hashable {
        /// Send this and wait for the client's next message.
        case send(PGBackendMessage)
        /// The client is authenticated: send these (SASLFinal and/or AuthenticationOk), then ParameterStatus,
        /// BackendKeyData and ReadyForQuery.
        case authenticated([PGBackendMessage])
        /// Send `ErrorResponse(error)` (severity FATAL) and close the connection.
        case fail(PGErrorFields, reason: PGServerAuthenticationFailure)
    }

    private enum State: Sendable {
        case initial
        case waitingForPassword(expected: String?, mismatch: PGServerAuthenticationFailure?)
        case waitingForSASLInitialResponse(SCRAMServer, mismatch: PGServerAuthenticationFailure?)
        case waitingForSASLResponse(SCRAMServer, mismatch: PGServerAuthenticationFailure?)
        case done
    }

    private let method: Method
    private let user: String
    private let secret: PGAuthSecret?
    private var state: State = .initial
    /// Once the client is authenticated against a secret: what Lifeguard may log in to PostgreSQL with as this user
    /// (pass-through). The md5 secret itself after md5, the ClientKey the proof revealed after SCRAM with a SCRAM
    /// secret, the password of a plain-text entry; nil under trust.
    public private(set) var credential: PGLoginCredential?
    private let randomSalt: @Sendable () -> [UInt8]
    private let makeServerNonce: @Sendable () -> String

    /// - Parameters:
    ///   - user: the user of the StartupMessage (SCRAM's own user name field is ignored, as in PostgreSQL).
    ///   - secret: the user's auth_file entry, `nil` when the user is not listed.
    public init(method: Method, user: String, secret: PGAuthSecret?) {
        self.init(
            method: method,
            user: user,
            secret: secret,
            md5Salt: { SCRAMSHA256.randomBytes(4) },
            serverNonce: SCRAMSHA256.makeNonce
        )
    }

    /// Tests fix the salt and nonce to replay known exchanges.
    init(
        method: Method,
        user: String,
        secret: PGAuthSecret?,
        md5Salt: @escaping @Sendable () -> [UInt8],
        serverNonce: @escaping @Sendable () -> String
    ) {
        self.method = method
        self.user = user
        self.secret = secret
        self.randomSalt = md5Salt
        self.makeServerNonce = serverNonce
    }

    public mutating func start() -> Action {
        guard case .initial = self.state else {
            return self.fail(protocolViolation: "authentication already started")
        }
        switch (self.method, self.secret) {
        case (.trust, _):
            self.state = .done
            return .authenticated([.authentication(.ok)])
        case (.md5, .plain(let password)):
            return self.startMD5(storedHash: String(PGMD5.storedHash(password: password, user: self.user).dropFirst(3)))
        case (.md5, .md5(let hash)):
            return self.startMD5(storedHash: hash)
        case (.md5, .scramSHA256(let secret)), (.scramSHA256, .scramSHA256(let secret)):
            return self.startSCRAM(secret: secret, mismatch: nil)
        case (.scramSHA256, .plain(let password)):
            let secret = PGSCRAMSecret(password: password, salt: MockSalt.salt(for: self.user, purpose: "plain"))
            return self.startSCRAM(secret: secret, mismatch: nil)
        case (.scramSHA256, .md5):
            return self.startSCRAM(secret: MockSalt.mockSecret(for: self.user), mismatch: .secretCannotServeMethod)
        case (.md5, nil):
            return self.startMD5(storedHash: nil)
        case (.scramSHA256, nil):
            return self.startSCRAM(secret: MockSalt.mockSecret(for: self.user), mismatch: .unknownUser)
        }
    }

    public mutating func receive(_ frame: PGFrame) -> Action {
        guard frame.type == PGFrontendMessageType.authenticationResponse else {
            return self.fail(protocolViolation: "expected a password response, got message type \(frame.type)")
        }
        switch self.state {
        case .waitingForPassword(let expected, let mismatch):
            let response: String
            do {
                response = try PGPasswordMessage.parse(body: frame.body)
            } catch {
                return self.fail(protocolViolation: "malformed password packet")
            }
            guard let expected else {
                return self.fail(mismatch ?? .unknownUser)
            }
            guard constantTimeEqual(Array(response.utf8), Array(expected.utf8)) else {
                return self.fail(.wrongPassword)
            }
            self.state = .done
            switch self.secret {
            case .plain(let password)?: self.credential = .password(password)
            case .md5(let hash)?: self.credential = .md5(hash: hash)
            case .scramSHA256?, nil: break
            }
            return .authenticated([.authentication(.ok)])

        case .waitingForSASLInitialResponse(var server, let mismatch):
            let initial: PGSASLInitialResponse
            do {
                initial = try PGSASLInitialResponse(body: frame.body)
            } catch {
                return self.fail(protocolViolation: "malformed SASLInitialResponse")
            }
            guard initial.mechanism == SCRAMSHA256.mechanism else {
                return self.fail(protocolViolation: "client selected an invalid SASL authentication mechanism")
            }
            guard let data = initial.initialResponse else {
                return self.fail(protocolViolation: "SCRAM requires an initial response")
            }
            do {
                let serverFirst = try server.receiveClientFirst(String(buffer: data))
                self.state = .waitingForSASLResponse(server, mismatch: mismatch)
                return .send(.authentication(.saslContinue(ByteBuffer(string: serverFirst))))
            } catch {
                return self.fail(scram: error)
            }

        case .waitingForSASLResponse(let server, let mismatch):
            let serverFinal: String
            let clientKey: [UInt8]
            do {
                (serverFinal, clientKey) = try server.verifyClientFinal(String(buffer: frame.body))
            } catch .invalidProof {
                return self.fail(mismatch ?? .wrongPassword)
            } catch {
                return self.fail(scram: error)
            }
            if let mismatch {
                // Only reachable if a mock secret's proof matched, which a client cannot arrange.
                return self.fail(mismatch)
            }
            self.state = .done
            switch self.secret {
            case .plain(let password)?: self.credential = .password(password)
            case .scramSHA256(let secret)?: self.credential = .scram(clientKey: clientKey, secret: secret)
            case .md5?, nil: break
            }
            return .authenticated([
                .authentication(.saslFinal(ByteBuffer(string: serverFinal))),
                .authentication(.ok),
            ])

        case .initial, .done:
            return self.fail(protocolViolation: "unexpected password packet")
        }
    }

    private mutating func startMD5(storedHash: String?) -> Action {
        let salt = self.randomSalt()
        let expected = storedHash.map { PGMD5.passwordMessage(storedHash: $0, salt: salt) }
        self.state = .waitingForPassword(expected: expected, mismatch: storedHash == nil ? .unknownUser : nil)
        return .send(.authentication(.md5Password(salt: salt)))
    }

    private mutating func startSCRAM(secret: PGSCRAMSecret, mismatch: PGServerAuthenticationFailure?) -> Action {
        let server = SCRAMServer(secret: secret, serverNonce: self.makeServerNonce())
        self.state = .waitingForSASLInitialResponse(server, mismatch: mismatch)
        return .send(.authentication(.sasl(mechanisms: [SCRAMSHA256.mechanism])))
    }

    private mutating func fail(_ reason: PGServerAuthenticationFailure) -> Action {
        self.state = .done
        let error = PGErrorFields.error(
            sqlState: PGSQLState.invalidPassword,
            message: "password authentication failed for user \"\(self.user)\"",
            severity: .fatal
        )
        return .fail(error, reason: reason)
    }

    private mutating func fail(protocolViolation detail: String) -> Action {
        self.state = .done
        let error = PGErrorFields.error(sqlState: PGSQLState.protocolViolation, message: detail, severity: .fatal)
        return .fail(error, reason: .protocolViolation)
    }

    private mutating func fail(scram failure: SCRAMServer.Failure) -> Action {
        switch failure {
        case .channelBindingNotSupported:
            return self.fail(protocolViolation: "channel binding is not supported")
        case .authorizationIdentityNotSupported:
            return self.fail(protocolViolation: "client uses authorization identity, but it is not supported")
        case .channelBindingMismatch:
            return self.fail(protocolViolation: "SCRAM channel binding check failed")
        case .nonceMismatch:
            return self.fail(protocolViolation: "SCRAM nonce does not match")
        case .malformedClientFirst(let reason), .malformedClientFinal(let reason):
            return self.fail(protocolViolation: "malformed SCRAM message: \(reason)")
        case .invalidProof:
            return self.fail(.wrongPassword)
        }
    }
}

/// The real reason a client failed authentication, for logs and metrics (the client sees 28P01 or 08P01).
public enum PGServerAuthenticationFailure: String, Sendable, Hashable {
    /// The user is not in the auth_file.
    case unknownUser = "unknown_user"
    /// The password or proof was wrong.
    case wrongPassword = "wrong_password"
    /// The auth_file holds an md5 secret and the method is scram-sha-256: md5 cannot serve SCRAM.
    case secretCannotServeMethod = "secret_cannot_serve_method"
    /// The client broke the authentication exchange.
    case protocolViolation = "protocol_violation"
}

/// Salts that are stable per user for the life of the process, so that the salt a client sees does not reveal
/// whether the user exists or holds a plain password (PostgreSQL does the same with its mock salt).
private enum MockSalt {
    private static let processKey: [UInt8] = SCRAMSHA256.randomBytes(32)

    static func salt(for user: String, purpose: String) -> [UInt8] {
        Array(SCRAMSHA256.hmac(key: self.processKey, Array("\(purpose)\0\(user)".utf8)).prefix(SCRAMSHA256.saltLength))
    }

    static func mockSecret(for user: String) -> PGSCRAMSecret {
        PGSCRAMSecret(
            iterations: SCRAMSHA256.defaultIterations,
            salt: self.salt(for: user, purpose: "plain"),
            storedKey: SCRAMSHA256.randomBytes(32),
            serverKey: SCRAMSHA256.randomBytes(32)
        )
    }
}
