import NIOCore

/// Authenticates Lifeguard towards PostgreSQL: trust, cleartext, md5 and SCRAM-SHA-256 (no channel binding), with a
/// password or a pass-through credential (``PGLoginCredential``: an md5 secret, or a SCRAM ClientKey).
///
/// Pure: feed it every Authentication request the server sends and do what the returned action says. After
/// ``Action/authenticated`` the server goes on with ParameterStatus, BackendKeyData and ReadyForQuery (an
/// ErrorResponse instead of an Authentication request ends the attempt; that is the caller's to handle).
///
/// States: `initial` → `authenticated` (trust) | `waitingForOk` (password sent) | `waitingForSASLContinue`;
/// `waitingForSASLContinue` → `waitingForSASLFinal` → `waitingForOk` (server verified) → `authenticated`.
/// Any state → `failed`, which is final.
public struct PGClientAuthenticationStateMachine: Sendable {
    public enum Action: Sendable, Hashable {
        /// Send this message to the server and wait for its next Authentication request.
        case send(PGFrontendMessage)
        /// Nothing to send; wait for the next Authentication request (after SASLFinal).
        case wait
        /// AuthenticationOk arrived after every check passed.
        case authenticated
        /// Give up on this connection.
        case fail(PGClientAuthenticationError)
    }

    private enum State: Sendable {
        case initial
        case waitingForOk
        case waitingForSASLContinue(SCRAMClient)
        case waitingForSASLFinal(SCRAMClient)
        case authenticated
        case failed
    }

    private let user: String
    private let credential: PGLoginCredential?
    private let makeClientNonce: @Sendable () -> String
    private var state: State = .initial

    /// - Parameters:
    ///   - user: the role name sent in the StartupMessage (md5 salts the hash with it).
    ///   - credential: what Lifeguard can prove for this role; `nil` allows trust only.
    public init(user: String, credential: PGLoginCredential?) {
        self.init(user: user, credential: credential, clientNonce: SCRAMSHA256.makeNonce)
    }

    /// - Parameter password: from the upstream DSN or a plain-text auth_file entry; `nil` allows trust only.
    public init(user: String, password: String?) {
        self.init(user: user, credential: password.map { .password($0) })
    }

    /// Tests fix the client nonce to replay known exchanges.
    init(user: String, credential: PGLoginCredential?, clientNonce: @escaping @Sendable () -> String) {
        self.user = user
        self.credential = credential
        self.makeClientNonce = clientNonce
    }

    init(user: String, password: String?, clientNonce: @escaping @Sendable () -> String) {
        self.init(user: user, credential: password.map { .password($0) }, clientNonce: clientNonce)
    }

    public mutating func receive(_ request: PGAuthenticationRequest) -> Action {
        switch (self.state, request) {
        case (.initial, .ok):
            self.state = .authenticated
            return .authenticated

        case (.initial, .cleartextPassword):
            switch self.credential {
            case .password(let password)?:
                self.state = .waitingForOk
                return .send(.password(password))
            case nil:
                return self.fail(.passwordRequired(method: "password"))
            case .md5?, .scram?:
                return self.fail(.secretCannotAnswer(method: "password", credential: self.credential))
            }

        case (.initial, .md5Password(let salt)):
            let response: String
            switch self.credential {
            case .password(let password)?:
                response = PGMD5.passwordMessage(password: password, user: self.user, salt: salt)
            case .md5(let hash)?:
                response = PGMD5.passwordMessage(storedHash: hash, salt: salt)
            case nil:
                return self.fail(.passwordRequired(method: "md5"))
            case .scram?:
                return self.fail(.secretCannotAnswer(method: "md5", credential: self.credential))
            }
            self.state = .waitingForOk
            return .send(.password(response))

        case (.initial, .sasl(let mechanisms)):
            guard mechanisms.contains(SCRAMSHA256.mechanism) else {
                return self.fail(.unsupportedSASLMechanisms(mechanisms))
            }
            let client: SCRAMClient
            switch self.credential {
            case .password(let password)?:
                client = SCRAMClient(password: password, clientNonce: self.makeClientNonce())
            case .scram(let clientKey, let secret)?:
                client = SCRAMClient(clientKey: clientKey, secret: secret, clientNonce: self.makeClientNonce())
            case nil:
                return self.fail(.passwordRequired(method: "scram-sha-256"))
            case .md5?:
                return self.fail(.secretCannotAnswer(method: "scram-sha-256", credential: self.credential))
            }
            self.state = .waitingForSASLContinue(client)
            let initial = PGSASLInitialResponse(
                mechanism: SCRAMSHA256.mechanism,
                initialResponse: ByteBuffer(string: client.clientFirstMessage)
            )
            return .send(.saslInitialResponse(initial))

        case (.initial, .kerberosV5), (.initial, .gss), (.initial, .sspi):
            return self.fail(.unsupportedMethod("\(request)"))

        case (.waitingForSASLContinue(var client), .saslContinue(let data)):
            do {
                let clientFinal = try client.receiveServerFirst(String(buffer: data))
                self.state = .waitingForSASLFinal(client)
                return .send(.saslResponse(ByteBuffer(string: clientFinal)))
            } catch {
                return self.fail(.scram(error))
            }

        case (.waitingForSASLFinal(let client), .saslFinal(let data)):
            do {
                try client.receiveServerFinal(String(buffer: data))
                self.state = .waitingForOk
                return .wait
            } catch {
                return self.fail(.scram(error))
            }

        case (.waitingForOk, .ok):
            self.state = .authenticated
            return .authenticated

        case (.failed, _):
            return .fail(.unexpectedRequest(state: "failed"))

        default:
            // Notably AuthenticationOk before SASLFinal: a server that skips proving itself is refused, as libpq does.
            return self.fail(.unexpectedRequest(state: self.stateName))
        }
    }

    private var stateName: String {
        switch self.state {
        case .initial: "initial"
        case .waitingForOk: "waiting for AuthenticationOk"
        case .waitingForSASLContinue: "waiting for SASLContinue"
        case .waitingForSASLFinal: "waiting for SASLFinal"
        case .authenticated: "authenticated"
        case .failed: "failed"
        }
    }

    private mutating func fail(_ error: PGClientAuthenticationError) -> Action {
        self.state = .failed
        return .fail(error)
    }
}

/// Why Lifeguard could not authenticate to PostgreSQL. Never contains the password.
public struct PGClientAuthenticationError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case passwordRequired(String)
        case secretCannotAnswer(method: String, secret: String)
        case unsupportedSASLMechanisms([String])
        case unsupportedMethod(String)
        case scram(SCRAMClient.Failure)
        case unexpectedRequest(String)
    }

    private let code: Code

    static func passwordRequired(method: String) -> Self { Self(code: .passwordRequired(method)) }
    static func secretCannotAnswer(method: String, credential: PGLoginCredential?) -> Self {
        let secret =
            switch credential {
            case .md5?: "an md5 secret"
            case .scram?: "a SCRAM-SHA-256 secret"
            case .password?, nil: "a password"
            }
        return Self(code: .secretCannotAnswer(method: method, secret: secret))
    }
    static func unsupportedSASLMechanisms(_ mechanisms: [String]) -> Self {
        Self(code: .unsupportedSASLMechanisms(mechanisms))
    }
    static func unsupportedMethod(_ method: String) -> Self { Self(code: .unsupportedMethod(method)) }
    static func scram(_ failure: SCRAMClient.Failure) -> Self { Self(code: .scram(failure)) }
    static func unexpectedRequest(state: String) -> Self { Self(code: .unexpectedRequest(state)) }

    public var description: String {
        switch self.code {
        case .passwordRequired(let method):
            "the server asks for \(method) authentication but no password is configured for this user"
        case .secretCannotAnswer(let method, let secret):
            "the server asks for \(method) authentication but Lifeguard holds only \(secret) for this user "
                + "(configure a password, or make the server use the method of the secret)"
        case .unsupportedSASLMechanisms(let mechanisms):
            "the server offers SASL mechanisms \(mechanisms) but only SCRAM-SHA-256 is supported"
        case .unsupportedMethod(let method):
            "the server asks for an unsupported authentication method (\(method))"
        case .scram(.malformedServerFirst(let reason)):
            "invalid SCRAM server-first-message: \(reason)"
        case .scram(.nonceMismatch):
            "the SCRAM server nonce does not extend the client nonce"
        case .scram(.malformedServerFinal(let reason)):
            "invalid SCRAM server-final-message: \(reason)"
        case .scram(.serverError(let error)):
            "the server reported a SCRAM error: \(error)"
        case .scram(.serverSignatureMismatch):
            "the server's SCRAM signature is wrong: it does not know the password (possible impostor)"
        case .scram(.secretMismatch):
            "the server's SCRAM salt or iteration count differs from the secret's: the password changed since "
                + "the secret was taken (update auth_file, or let a client log in again)"
        case .unexpectedRequest(let state):
            "unexpected authentication request while \(state)"
        }
    }
}
