import Crypto
import Foundation
import X509

/// Certificates and keys made on the fly, and a directory to write them and web configurations into.
final class TestDirectory: Sendable {
    let path: String

    init() throws {
        self.path =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("lifeguard-web-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: self.path, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: self.path)
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    @discardableResult
    func write(_ name: String, _ contents: String) throws -> String {
        let file = (self.path as NSString).appendingPathComponent(name)
        try contents.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }
}

enum TestPKI {
    /// A P-256 key in PKCS#8 PEM, and a self-signed certificate for it valid until `notAfter`.
    static func selfSigned(
        commonName: String = "lifeguard test",
        notAfter: Date = Date().addingTimeInterval(90 * 86_400)
    ) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let privateKey = Certificate.PrivateKey(key)
        let name = try DistinguishedName { CommonName(commonName) }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: privateKey.publicKey,
            notValidBefore: Date().addingTimeInterval(-86_400 * 400),
            notValidAfter: notAfter,
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            },
            issuerPrivateKey: privateKey
        )
        return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
    }
}
