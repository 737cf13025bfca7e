import Testing

@testable import PGWire

@Suite struct PGAuthSecretTests {
    @Test func md5AgainstIndependentlyComputedValues() {
        // printf 'penciluser' | md5sum
        #expect(PGMD5.storedHash(password: "pencil", user: "user") == "md520c46e3762c864548e296b33c3406aa9")
        // printf '%s\x01\x02\x03\x04' 20c46e3762c864548e296b33c3406aa9 | md5sum
        #expect(
            PGMD5.passwordMessage(password: "pencil", user: "user", salt: [1, 2, 3, 4])
                == "md54376eb6913b38f9aaff38dc7cf19ca76"
        )
        #expect(
            PGMD5.passwordMessage(storedHash: "20c46e3762c864548e296b33c3406aa9", salt: [1, 2, 3, 4])
                == "md54376eb6913b38f9aaff38dc7cf19ca76"
        )
    }

    @Test func classifiesSecretsLikePostgreSQL() throws {
        #expect(
            try PGAuthSecret(parsing: "md54a0a68b43b6cd5cf266fa02f196e2371")
                == .md5(hash: "4a0a68b43b6cd5cf266fa02f196e2371")
        )
        // Upper-case hex, a wrong length or a non-hex digit make it a plain password, as in PostgreSQL.
        #expect(
            try PGAuthSecret(parsing: "md54A0A68B43B6CD5CF266FA02F196E2371")
                == .plain("md54A0A68B43B6CD5CF266FA02F196E2371")
        )
        #expect(
            try PGAuthSecret(parsing: "md54a0a68b43b6cd5cf266fa02f196e237")
                == .plain("md54a0a68b43b6cd5cf266fa02f196e237")
        )
        #expect(
            try PGAuthSecret(parsing: "md54a0a68b43b6cd5cf266fa02f196e237g")
                == .plain("md54a0a68b43b6cd5cf266fa02f196e237g")
        )
        #expect(try PGAuthSecret(parsing: "") == .plain(""))
        #expect(
            try PGAuthSecret(parsing: SCRAMSHA256Tests.secret)
                == .scramSHA256(try PGSCRAMSecret(parsing: SCRAMSHA256Tests.secret))
        )
    }

    @Test func parsesAndPrintsSCRAMSecrets() throws {
        let secret = try PGSCRAMSecret(parsing: SCRAMSHA256Tests.secret)
        #expect(secret.iterations == 4096)
        #expect(secret.salt.count == 16)
        #expect(secret.text == SCRAMSHA256Tests.secret)
        // Deriving from the password with the same salt gives the same secret (PostgreSQL's `CREATE ROLE`).
        #expect(PGSCRAMSecret(password: "pencil", salt: secret.salt, iterations: 4096) == secret)
    }

    @Test(arguments: [
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:!!!$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3Otc:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
    ])
    func rejectsDamagedSCRAMSecrets(_ text: String) {
        #expect(throws: PGAuthSecretError.self) { try PGAuthSecret(parsing: text) }
    }

    @Test func descriptionsNeverShowSecrets() throws {
        #expect(!PGAuthSecret.plain("hunter2").description.contains("hunter2"))
        #expect(!PGAuthSecret.md5(hash: "4a0a68b43b6cd5cf266fa02f196e2371").description.contains("4a0a68"))
        let scram = try PGAuthSecret(parsing: SCRAMSHA256Tests.secret)
        #expect(!scram.description.contains("W22ZaJ0"))
        #expect(!"\(scram)".contains("WG5d8oPm"))
    }
}
