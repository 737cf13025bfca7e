/// What Lifeguard proves to PostgreSQL when it logs in as a role (``PGClientAuthenticationStateMachine``).
///
/// | credential | cleartext | md5 | SCRAM-SHA-256 |
/// |---|---|---|---|
/// | ``password(_:)`` | yes | yes | yes |
/// | ``md5(hash:)`` | no | yes: the stored hash answers the salt challenge | no |
/// | ``scram(clientKey:secret:)`` | no | no | yes, when the server's salt and iterations are the secret's |
///
/// The last two are pass-through credentials: taken from an auth_file or `auth_query` secret and, for SCRAM, from
/// the ClientKey a client's proof revealed, so that no plain-text password is stored anywhere. None of `description`,
/// `debugDescription` or reflection shows the secret.
public enum PGLoginCredential: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// From the upstream DSN or a plain-text auth_file entry.
    case password(String)
    /// The 32 lowercase hex digits of an md5 secret (md5 of password + user name).
    case md5(hash: String)
    /// The ClientKey recovered from a client's SCRAM proof, and the secret it was verified against
    /// (H(ClientKey) = StoredKey): salt, iterations and ServerKey to check the server's signature with.
    case scram(clientKey: [UInt8], secret: PGSCRAMSecret)

    public var description: String {
        switch self {
        case .password: "password (hidden)"
        case .md5: "md5 secret (hidden)"
        case .scram: "SCRAM-SHA-256 client key (hidden)"
        }
    }

    public var debugDescription: String { self.description }

    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .enum) }
}
