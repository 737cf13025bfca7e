import Testing

@testable import PGWire

@Suite struct PGUserListTests {
    @Test func parsesPgBouncerUserlist() throws {
        let text = """
            ; PgBouncer comment
            # our comment

            "alice" "plain secret"
            "bob" "md54a0a68b43b6cd5cf266fa02f196e2371" "ignored third field"
              "carol"   "\(SCRAMSHA256Tests.secret)"
            "quo""te" "pa""ss"\r
            "empty" ""
            """
        let list = try PGUserList(parsing: text)
        #expect(list.secrets.count == 5)
        #expect(list["alice"] == .plain("plain secret"))
        #expect(list["bob"] == .md5(hash: "4a0a68b43b6cd5cf266fa02f196e2371"))
        #expect(list["carol"] == .scramSHA256(try PGSCRAMSecret(parsing: SCRAMSHA256Tests.secret)))
        #expect(list["quo\"te"] == .plain("pa\"ss"))
        #expect(list["empty"] == .plain(""))
        #expect(list["nobody"] == nil)
    }

    @Test(arguments: [
        ("\"alice\" \"x\"\nalice x\n", 2, "expected a user name in double quotes"),
        ("\n\n\"alice\"\n", 3, "expected a password or secret in double quotes after the user name"),
        ("\"alice\" \"unterminated\n", 1, "expected a password or secret in double quotes after the user name"),
        ("\"alice\" \"a\"\n\"alice\" \"b\"\n", 2, "user \"alice\" is listed more than once"),
        ("\"\" \"a\"\n", 1, "the user name is empty"),
    ])
    func reportsTheLineOfEachProblem(text: String, line: Int, message: String) {
        #expect(throws: PGUserListError(line: line, message: message)) { try PGUserList(parsing: text) }
    }

    @Test func damagedSecretIsReportedWithoutTheSecret() {
        let text = "\"alice\" \"ok\"\n\"bob\" \"SCRAM-SHA-256$4096:c2FsdA==$tooshort:tooshort\"\n"
        #expect {
            try PGUserList(parsing: text)
        } throws: { error in
            guard let error = error as? PGUserListError else { return false }
            return error.line == 2 && error.description.hasPrefix("line 2: user \"bob\": ")
                && !error.description.contains("tooshort")
        }
    }
}
